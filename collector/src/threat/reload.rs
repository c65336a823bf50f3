//! The configured lists, kept loaded and current: [`Lists`] loads every
//! `[[threat.list]]` at start, and reloads a list when its file changes
//! (device, inode, size or modification time, checked every `[threat]
//! check_every` on a thread of its own) or on SIGHUP (every list, changed or
//! not). A reload that fails keeps the previous list and says why, once per
//! change of the file.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use ipnet::IpNet;

use super::list::{List, ListError, ListSpec, Stamp};
use super::{Allowlist, Table};
use crate::metrics::ThreatMetrics;

/// How often list files are checked for a change, unless `[threat]
/// check_every` says otherwise.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Bad lines of a list logged one by one at each load; the others are counted.
pub const BAD_LINES_LOGGED: usize = 5;

/// What a check did with one list.
#[derive(Debug)]
pub enum Reload {
    /// Its file is the one loaded (or the one that failed last).
    Unchanged,
    /// It was loaded anew.
    Loaded {
        /// Networks in it.
        entries: usize,
        /// Lines not used.
        bad_lines: usize,
    },
    /// Its file changed and could not be loaded: the previous list is kept.
    Failed(ListError),
}

/// The lists of the config, as loaded now.
pub struct Lists {
    specs: Vec<ListSpec>,
    allow: Arc<Allowlist>,
    table: RwLock<Arc<Table>>,
    /// The stamp of each list's file as last read (loaded or failed); `None`:
    /// it could not be found at the last check.
    stamps: Mutex<Vec<Option<Stamp>>>,
    metrics: ThreatMetrics,
}

impl std::fmt::Debug for Lists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lists").field("table", &self.table()).finish()
    }
}

impl Lists {
    /// Loads every list of `specs` behind the allowlist `allow`; the first
    /// list that cannot be loaded is the error (nothing is served without it).
    pub fn load(allow: &[IpNet], specs: &[ListSpec], metrics: ThreatMetrics) -> Result<Lists, ListError> {
        let mut lists = Vec::with_capacity(specs.len());
        let mut stamps = Vec::with_capacity(specs.len());
        for spec in specs {
            let (list, stamp) = List::read(spec)?;
            log_loaded(&list, &metrics);
            lists.push(Arc::new(list));
            stamps.push(Some(stamp));
        }
        let allow = Arc::new(Allowlist::new(allow));
        Ok(Lists {
            specs: specs.to_vec(),
            table: RwLock::new(Arc::new(Table::new(allow.clone(), lists))),
            allow,
            stamps: Mutex::new(stamps),
            metrics,
        })
    }

    /// The lists as loaded now (a reload afterwards does not change it).
    pub fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether any list is configured.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Reloads the lists whose file changed since it was last read
    /// (`force`: every list); what it did with each, in config order.
    pub fn check(&self, force: bool) -> Vec<Reload> {
        let mut stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        let mut outcomes = Vec::with_capacity(self.specs.len());
        let mut replaced: Vec<(usize, Arc<List>)> = Vec::new();
        for (i, spec) in self.specs.iter().enumerate() {
            let now = Stamp::of(&spec.path).ok();
            if !force && now == stamps[i] {
                outcomes.push(Reload::Unchanged);
                continue;
            }
            match List::read(spec) {
                Ok((list, stamp)) => {
                    log_loaded(&list, &self.metrics);
                    stamps[i] = Some(stamp);
                    outcomes.push(Reload::Loaded {
                        entries: list.entries(),
                        bad_lines: list.bad_lines,
                    });
                    replaced.push((i, Arc::new(list)));
                }
                Err(e) => {
                    let kept = self.table().lists().get(i).map_or(0, |l| l.entries());
                    tracing::error!(list = %spec.name, error = %e, kept_entries = kept,
                        "cannot reload a threat list; keeping the one loaded before");
                    self.metrics.reload_failed(&spec.name);
                    stamps[i] = now;
                    outcomes.push(Reload::Failed(e));
                }
            }
        }
        if !replaced.is_empty() {
            let mut lists = self.table().lists().to_vec();
            for (i, list) in replaced {
                lists[i] = list;
            }
            let table = Arc::new(Table::new(self.allow.clone(), lists));
            *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
        }
        outcomes
    }

    /// Starts the thread that checks the files every `every`, and at once
    /// (every list) when the returned sender is sent `()` (SIGHUP's handler
    /// does). The thread ends when the sender is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> std::io::Result<Sender<()>> {
        let (hangup, hangups) = std::sync::mpsc::channel();
        let lists = self.clone();
        std::thread::Builder::new()
            .name("threat-lists".to_owned())
            .spawn(move || lists.watching(every, &hangups))?;
        Ok(hangup)
    }

    fn watching(&self, every: Duration, hangups: &Receiver<()>) {
        loop {
            let force = match hangups.recv_timeout(every) {
                Ok(()) => true,
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if force {
                tracing::info!("SIGHUP: reloading every threat list");
            }
            self.check(force);
        }
    }
}

/// Logs a list just loaded (its first bad lines one by one) and sets its metrics.
fn log_loaded(list: &List, metrics: &ThreatMetrics) {
    tracing::info!(list = %list.name, path = %list.path.display(), entries = list.entries(),
        bad_lines = list.bad_lines, "loaded threat list");
    for bad in list.bad.iter().take(BAD_LINES_LOGGED) {
        tracing::warn!(list = %list.name, path = %list.path.display(), line = bad.line, reason = %bad.reason,
            "bad line in threat list, not used");
    }
    if list.bad_lines > BAD_LINES_LOGGED {
        tracing::warn!(list = %list.name, more = list.bad_lines - BAD_LINES_LOGGED,
            "more bad lines in threat list, not used");
    }
    metrics.loaded(&list.name, list.entries(), list.bad_lines);
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use portwatch_model::Severity;

    use super::*;
    use crate::threat::Format;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("pw-threat-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn spec(path: &Path) -> ListSpec {
        ListSpec {
            name: "level1".to_owned(),
            path: path.to_owned(),
            format: Format::Netset,
            severity: Severity::Critical,
        }
    }

    fn listed(lists: &Lists, addr: &str) -> Option<String> {
        let table = lists.table();
        let verdict = table.verdict(addr.parse().unwrap());
        verdict.matches.first().map(|m| m.net.to_string())
    }

    /// Writes `text` to `path` by renaming a complete file into place, as a download job should.
    fn replace(path: &Path, text: &str) {
        let next = path.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, path).unwrap();
    }

    #[test]
    fn a_changed_file_is_loaded_at_the_next_check_and_an_unchanged_one_is_not_read() {
        let dir = Dir::new("changed");
        let path = dir.0.join("level1.netset");
        replace(&path, "185.220.101.0/24\n");
        let metrics = ThreatMetrics::default();
        let lists = Lists::load(&[], &[spec(&path)], metrics).unwrap();
        assert_eq!(listed(&lists, "185.220.101.7").as_deref(), Some("185.220.101.0/24"));
        assert!(matches!(lists.check(false)[..], [Reload::Unchanged]));
        let before = lists.table();
        replace(&path, "185.220.101.0/24\n45.155.205.0/24\nbad line\n");
        assert!(matches!(
            lists.check(false)[..],
            [Reload::Loaded {
                entries: 2,
                bad_lines: 1
            }]
        ));
        assert_eq!(listed(&lists, "45.155.205.9").as_deref(), Some("45.155.205.0/24"));
        assert_eq!(
            before.verdict("45.155.205.9".parse().unwrap()).matches,
            [],
            "a table taken stays as it was"
        );
        assert!(
            matches!(lists.check(true)[..], [Reload::Loaded { .. }]),
            "forced: read again"
        );
    }

    #[test]
    fn a_broken_or_missing_file_on_reload_keeps_the_previous_list_and_fails_once_per_change() {
        let dir = Dir::new("broken");
        let path = dir.0.join("level1.netset");
        replace(&path, "185.220.101.0/24\n");
        let lists = Lists::load(&[], &[spec(&path)], ThreatMetrics::default()).unwrap();
        replace(&path, "<html>503 Service Unavailable</html>\n");
        match &lists.check(false)[..] {
            [Reload::Failed(e)] => assert!(e.to_string().contains("no line"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(listed(&lists, "185.220.101.7").as_deref(), Some("185.220.101.0/24"));
        assert!(
            matches!(lists.check(false)[..], [Reload::Unchanged]),
            "not again until it changes"
        );
        std::fs::remove_file(&path).unwrap();
        match &lists.check(false)[..] {
            [Reload::Failed(e)] => assert!(e.to_string().contains("cannot read"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(lists.check(false)[..], [Reload::Unchanged]));
        assert_eq!(listed(&lists, "185.220.101.7").as_deref(), Some("185.220.101.0/24"));
        replace(&path, "45.155.205.0/24\n");
        assert!(matches!(lists.check(false)[..], [Reload::Loaded { entries: 1, .. }]));
        assert_eq!(listed(&lists, "185.220.101.7"), None);
    }

    #[test]
    fn a_missing_file_at_start_is_an_error_naming_it() {
        let e = Lists::load(
            &[],
            &[spec(Path::new("/nonexistent/level1.netset"))],
            ThreatMetrics::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/nonexistent/level1.netset") && e.contains("\"level1\""),
            "{e}"
        );
    }

    #[test]
    fn the_watch_thread_reloads_a_changed_file_and_reloads_all_when_told() {
        let dir = Dir::new("watch");
        let path = dir.0.join("level1.netset");
        replace(&path, "185.220.101.0/24\n");
        let lists = Arc::new(Lists::load(&[], &[spec(&path)], ThreatMetrics::default()).unwrap());
        let hangup = lists.watch(Duration::from_millis(20)).unwrap();
        replace(&path, "45.155.205.0/24\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while listed(&lists, "45.155.205.9").is_none() {
            assert!(std::time::Instant::now() < deadline, "the change was never loaded");
            std::thread::sleep(Duration::from_millis(10));
        }
        hangup.send(()).unwrap();
        drop(hangup);
    }
}
