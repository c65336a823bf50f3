//! Trends: what history says over time, for people and the dashboard.
//!
//! [`Builder`] takes listener intervals one at a time (as the store streams
//! them) and keeps only small aggregates, so a week of a large fleet is
//! summarised without holding it: the number of open listeners at each
//! bucket boundary, short-lived listeners, listeners that recur at the same
//! hour on several days, and the ports open on the most hosts. Ports first
//! seen fleet-wide come from the store ([`crate::store::HistoryReads::first_seen_ports`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use portwatch_common::Proto;

use portwatch_model::trend::{
    FirstSeen, Point, Recurring, ShortLived, TopPort, Trends, MAX_BUCKETS, RECURRING_DAYS, SHORT_LIVED, TOP,
};
use portwatch_model::ListenerRow;

/// One socket of one host.
type SocketKey = (Arc<str>, portwatch_common::SocketKey);

/// A socket that may be short-lived.
#[derive(Debug)]
struct Short {
    proto: Proto,
    port: u16,
    process: Option<String>,
    opened_at: Timestamp,
    closed_at: Timestamp,
}

/// Accumulates intervals into [`Trends`]. Intervals must come in order of
/// opening time (as the store's `history` and `export` give them).
pub struct Builder {
    since: Timestamp,
    until: Timestamp,
    step: SignedDuration,
    buckets: usize,
    /// Difference array of open listeners per bucket boundary.
    delta: Vec<i64>,
    short: BTreeMap<(String, Proto, u16, Option<String>), ShortLived>,
    /// Sockets whose last interval closed at an instant a later interval may
    /// still open at (an owner change continues a socket): when the socket
    /// opened, and that close.
    sockets: HashMap<SocketKey, (Timestamp, Timestamp)>,
    /// `sockets` by close, to forget them once the stream is past it.
    expiry: BTreeMap<Timestamp, Vec<SocketKey>>,
    /// Sockets that lived less than [`SHORT_LIVED`] so far, until it is
    /// known that no later interval continues them.
    pending: HashMap<SocketKey, Short>,
    opens_by_hour: BTreeMap<(Arc<str>, Proto, u16, i8), BTreeSet<jiff::civil::Date>>,
    open_at_end: BTreeMap<(Proto, u16), BTreeSet<Arc<str>>>,
}

/// Why a window cannot be summarised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TrendError(pub String);

impl Builder {
    /// A builder for `[since, until]` in buckets of `bucket`.
    pub fn new(since: Timestamp, until: Timestamp, bucket: Duration) -> Result<Builder, TrendError> {
        if since >= until {
            return Err(TrendError(format!("since ({since}) must be before until ({until})")));
        }
        let step = SignedDuration::try_from(bucket)
            .ok()
            .filter(|s| s.as_secs() > 0)
            .ok_or_else(|| TrendError("a bucket is at least one second".to_owned()))?;
        let span = until.duration_since(since);
        let buckets = usize::try_from(span.as_secs() / step.as_secs())
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        if buckets > MAX_BUCKETS {
            return Err(TrendError(format!(
                "{buckets} buckets of {} in the window: use a larger bucket (day) or a shorter window",
                humantime::format_duration(bucket)
            )));
        }
        Ok(Builder {
            since,
            until,
            step,
            buckets,
            delta: vec![0; buckets + 1],
            short: BTreeMap::new(),
            sockets: HashMap::new(),
            expiry: BTreeMap::new(),
            pending: HashMap::new(),
            opens_by_hour: BTreeMap::new(),
            open_at_end: BTreeMap::new(),
        })
    }

    /// The first bucket whose start is at or after `t`.
    fn bucket_at_or_after(&self, t: Timestamp) -> usize {
        if t <= self.since {
            return 0;
        }
        let ms = t.duration_since(self.since).as_millis();
        let step = self.step.as_millis();
        usize::try_from((ms + step - 1) / step)
            .unwrap_or(usize::MAX)
            .min(self.buckets)
    }

    /// Takes one interval (of any host) that overlaps the window.
    pub fn add(&mut self, row: &ListenerRow) {
        let l = &row.listener;
        // Open at boundary t when opened_at <= t < closed_at.
        let first = self.bucket_at_or_after(row.opened_at);
        let end = match row.closed_at {
            Some(c) => {
                let b = self.bucket_at_or_after(c);
                // A close exactly at a boundary is not open there.
                b.min(self.buckets)
            }
            None => self.buckets,
        };
        if first < end {
            self.delta[first] += 1;
            self.delta[end] -= 1;
        }
        // Sockets no later interval can continue any more.
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() >= row.opened_at {
                break;
            }
            let (closed, keys) = entry.remove_entry();
            for key in keys {
                if self.sockets.get(&key).is_some_and(|(_, c)| *c == closed) {
                    self.sockets.remove(&key);
                    if let Some(short) = self.pending.remove(&key) {
                        self.count_short(&key.0, short);
                    }
                }
            }
        }
        let key: SocketKey = (row.host.clone(), l.socket_key());
        // An interval opening on a socket at the instant its previous one
        // closed is an owner change, not a new listener (see `Edge`).
        let continued = self
            .sockets
            .get(&key)
            .filter(|(_, c)| *c == row.opened_at)
            .map(|(start, _)| *start);
        if continued.is_some() {
            self.pending.remove(&key);
        }
        let started = continued.unwrap_or(row.opened_at);
        let in_window = started >= self.since && started <= self.until;
        match row.closed_at {
            Some(closed) => {
                self.sockets.insert(key.clone(), (started, closed));
                self.expiry.entry(closed).or_default().push(key.clone());
                let short_lived = closed.duration_since(started)
                    < SignedDuration::try_from(SHORT_LIVED).unwrap_or(SignedDuration::MAX);
                if in_window && short_lived {
                    let short = Short {
                        proto: l.proto,
                        port: l.local_port,
                        process: l.processes.first().map(|p| p.name.to_string()),
                        opened_at: started,
                        closed_at: closed,
                    };
                    self.pending.insert(key, short);
                }
            }
            None => {
                self.sockets.remove(&key);
            }
        }
        if in_window && continued.is_none() {
            let utc = row.opened_at.to_zoned_datetime(jiff::tz::TimeZone::UTC);
            self.opens_by_hour
                .entry((row.host.clone(), l.proto, l.local_port, utc.hour()))
                .or_default()
                .insert(utc.date());
        }
        if row.opened_at <= self.until && row.closed_at.is_none_or(|c| c > self.until) {
            self.open_at_end
                .entry((l.proto, l.local_port))
                .or_default()
                .insert(row.host.clone());
        }
    }

    /// Counts a short-lived socket of `host`.
    fn count_short(&mut self, host: &str, s: Short) {
        let ms = u64::try_from(s.closed_at.duration_since(s.opened_at).as_millis()).unwrap_or(0);
        let entry = self
            .short
            .entry((host.to_owned(), s.proto, s.port, s.process.clone()))
            .or_insert_with(|| ShortLived {
                host: host.into(),
                proto: s.proto,
                port: s.port,
                process: s.process,
                count: 0,
                shortest_ms: ms,
                last_opened_at: s.opened_at,
            });
        entry.count += 1;
        entry.shortest_ms = entry.shortest_ms.min(ms);
        entry.last_opened_at = entry.last_opened_at.max(s.opened_at);
    }

    /// The trends, with the first-seen ports the store found (newest first).
    pub fn finish(mut self, host: Option<String>, first_seen: Vec<FirstSeen>) -> Trends {
        for (key, short) in std::mem::take(&mut self.pending) {
            self.count_short(&key.0, short);
        }
        let mut open = Vec::with_capacity(self.buckets);
        let mut running = 0i64;
        for i in 0..self.buckets {
            running += self.delta[i];
            let at = self.since + self.step * i32::try_from(i).unwrap_or(i32::MAX);
            open.push(Point {
                at,
                listeners: u64::try_from(running).unwrap_or(0),
            });
        }
        let day_ago = portwatch_model::time::before(self.until, Duration::from_secs(86_400));
        let mut new_7d = first_seen;
        new_7d.sort_by(|a, b| {
            b.first_seen
                .cmp(&a.first_seen)
                .then((a.proto, a.port).cmp(&(b.proto, b.port)))
        });
        let new_24h = new_7d.iter().filter(|f| f.first_seen > day_ago).cloned().collect();

        let mut short: Vec<ShortLived> = self.short.into_values().collect();
        short.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.host.cmp(&b.host))
                .then(a.port.cmp(&b.port))
        });
        short.truncate(TOP);

        let mut recurring: Vec<Recurring> = self
            .opens_by_hour
            .into_iter()
            .filter(|(_, days)| days.len() >= RECURRING_DAYS)
            .map(|((host, proto, port, hour_utc), days)| Recurring {
                host: host.to_string(),
                proto,
                port,
                hour_utc,
                days: days.len(),
            })
            .collect();
        recurring.sort_by(|a, b| b.days.cmp(&a.days).then(a.host.cmp(&b.host)).then(a.port.cmp(&b.port)));
        recurring.truncate(TOP);

        let mut top: Vec<TopPort> = self
            .open_at_end
            .into_iter()
            .map(|((proto, port), hosts)| TopPort {
                proto,
                port,
                hosts: hosts.len() as u64,
            })
            .collect();
        top.sort_by(|a, b| b.hosts.cmp(&a.hosts).then((a.port, a.proto).cmp(&(b.port, b.proto))));
        top.truncate(TOP);

        Trends {
            host,
            since: self.since,
            until: self.until,
            bucket_secs: u64::try_from(self.step.as_secs()).unwrap_or(0),
            open_listeners: open,
            new_ports_24h: new_24h,
            new_ports_7d: new_7d,
            short_lived: short,
            recurring,
            top_ports: top,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::{Exposure, Family, Listener, Process};

    fn t(s: i64) -> Timestamp {
        // 2027-01-15T00:00:00Z
        Timestamp::from_second(1_799_971_200 + s).unwrap()
    }

    fn row(host: &str, port: u16, opened: i64, closed: Option<i64>) -> ListenerRow {
        ListenerRow {
            host: host.into(),
            listener: Listener {
                netns: 1,
                proto: Proto::Tcp,
                family: Family::Ipv4,
                local_addr: "0.0.0.0".parse().unwrap(),
                local_port: port,
                inode: u64::from(port) * 1_000_000 + opened.unsigned_abs(),
                uid: 0,
                user: None,
                exposure: Exposure::Wildcard,
                dual_stack: false,
                processes: vec![Process {
                    pid: 9,
                    name: format!("svc{port}").into(),
                    cmdline: None,
                    exe: None,
                    uid: None,
                    user: None,
                    container: None,
                    unit: None,
                }],
                firewall: None,
            },
            opened_at: t(opened),
            closed_at: closed.map(t),
        }
    }

    const H: i64 = 3600;

    #[test]
    fn open_listeners_are_counted_at_each_bucket_start() {
        let mut b = Builder::new(t(0), t(4 * H), Duration::from_secs(3600)).unwrap();
        b.add(&row("a", 22, -100 * H, None)); // open all along
        b.add(&row("a", 80, H, Some(3 * H))); // open at 1h and 2h, closed exactly at 3h
        b.add(&row("b", 80, H + 1, Some(H + 30))); // between two boundaries: never counted
        b.add(&row("b", 443, -H, Some(H / 2))); // open at 0 only
        let tr = b.finish(None, Vec::new());
        let counts: Vec<u64> = tr.open_listeners.iter().map(|p| p.listeners).collect();
        assert_eq!(counts, vec![2, 2, 2, 1, 1]);
        assert_eq!(tr.open_listeners[1].at, t(H));
        assert_eq!(tr.bucket_secs, 3600);
    }

    #[test]
    fn short_lived_recurring_and_top_ports_are_found() {
        let mut b = Builder::new(t(0), t(5 * 24 * H), Duration::from_secs(86_400)).unwrap();
        for day in 0..4 {
            // A backup job opening :873 at 03:00 UTC for 20 minutes, every day.
            b.add(&row(
                "db-1",
                873,
                day * 24 * H + 3 * H + 60,
                Some(day * 24 * H + 3 * H + 1260),
            ));
        }
        for i in 0..3 {
            b.add(&row("web-1", 9999, 10 * H + i * 100, Some(10 * H + i * 100 + 5)));
        }
        b.add(&row("web-1", 22, -H, None));
        b.add(&row("web-2", 22, -H, None));
        b.add(&row("web-2", 443, -H, None));
        let tr = b.finish(None, Vec::new());
        assert_eq!(tr.short_lived.len(), 1);
        let s = &tr.short_lived[0];
        assert_eq!(
            (s.host.as_str(), s.port, s.count, s.shortest_ms),
            ("web-1", 9999, 3, 5000)
        );
        assert_eq!(s.process.as_deref(), Some("svc9999"));
        assert_eq!(tr.recurring.len(), 1);
        let r = &tr.recurring[0];
        assert_eq!((r.host.as_str(), r.port, r.hour_utc, r.days), ("db-1", 873, 3, 4));
        let top: Vec<(u16, u64)> = tr.top_ports.iter().map(|p| (p.port, p.hosts)).collect();
        assert_eq!(top, vec![(22, 2), (443, 1)]);
    }

    #[test]
    fn owner_changes_of_one_socket_are_neither_short_lived_nor_new_opens() {
        let mut b = Builder::new(t(0), t(5 * 24 * H), Duration::from_secs(86_400)).unwrap();
        // One socket of a prefork server, its worker replaced at 03:00 UTC on
        // four days, then every 10 s for a minute: one long life in fragments.
        let fragment = |from: i64, to: Option<i64>| {
            let mut r = row("web-1", 80, from, to);
            r.listener.inode = 4242;
            r
        };
        let mut at = -H;
        for day in 0..4 {
            let next = day * 24 * H + 3 * H;
            b.add(&fragment(at, Some(next)));
            if day == 0 {
                // A real short-lived socket, for contrast (the stream is in opening order).
                b.add(&row("web-1", 81, H, Some(H + 3)));
            }
            at = next;
        }
        for _ in 0..6 {
            b.add(&fragment(at, Some(at + 10)));
            at += 10;
        }
        b.add(&fragment(at, None));
        let tr = b.finish(None, Vec::new());
        let short: Vec<u16> = tr.short_lived.iter().map(|s| s.port).collect();
        assert_eq!(short, vec![81], "{:?}", tr.short_lived);
        assert!(tr.recurring.is_empty(), "{:?}", tr.recurring);
    }

    #[test]
    fn new_ports_are_split_by_age_newest_first() {
        let b = Builder::new(t(0), t(7 * 24 * H), Duration::from_secs(86_400)).unwrap();
        let seen = |port, at| FirstSeen {
            proto: Proto::Tcp,
            port,
            first_seen: t(at),
            host: "web-1".to_owned(),
        };
        let tr = b.finish(
            Some("web-1".to_owned()),
            vec![seen(8080, 2 * 24 * H), seen(31337, 7 * 24 * H - H)],
        );
        assert_eq!(
            tr.new_ports_7d.iter().map(|f| f.port).collect::<Vec<_>>(),
            vec![31337, 8080]
        );
        assert_eq!(tr.new_ports_24h.iter().map(|f| f.port).collect::<Vec<_>>(), vec![31337]);
    }

    #[test]
    fn a_window_that_is_empty_or_too_finely_cut_is_refused() {
        assert!(Builder::new(t(10), t(0), Duration::from_secs(60)).is_err());
        let e = Builder::new(t(0), t(90 * 24 * H), Duration::from_secs(60))
            .err()
            .unwrap();
        assert!(e.0.contains("larger bucket"), "{e}");
    }
}
