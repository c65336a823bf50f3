//! The on-disk spool: reports the collector has not acknowledged yet.
//!
//! While the collector is unreachable the agent keeps observing and pushes
//! each report here; when the collector is back the shipper replays them in
//! push order ([`Spool::pending`]) and acknowledges what the collector
//! committed ([`Spool::ack_through`], or [`Spool::ack`]). History after an
//! outage is then the history without one.
//!
//! # Format
//!
//! A spool is one directory (created `0700`, files `0600`) holding:
//!
//! - `lock`: held with an exclusive `flock` while a [`Spool`] is open, so
//!   two agents never share a spool (the second gets [`SpoolError::Locked`]).
//! - Segments `NNNNNNNNNNNNNNNNNNNN.jsonl` (a 20-digit, zero-padded,
//!   increasing number): one [`SpooledReport`] per line, as JSON, in push
//!   order. Only the newest segment is appended to; a new one is started
//!   when it would grow past [`SEGMENT_BYTES`] (or a quarter of the spool's
//!   `max_bytes`, if that is smaller, so the drop policy below never has to
//!   drop most of the spool at once).
//! - `cursor`: `{"segment":N,"offset":B,"dropped":D}`, the acknowledged
//!   position (everything before byte `B` of segment `N`, and every older
//!   segment, is acknowledged) and the count of dropped reports not yet
//!   reported. Absent means nothing was acknowledged or dropped. It is
//!   replaced atomically: written to `cursor.tmp`, fsynced, renamed over
//!   `cursor`, directory fsynced. While an open quarantines segments it
//!   also holds `"quarantining":[N,...]` (see "Damaged files").
//! - Quarantined files (see "Damaged files"): `NNNNNNNNNNNNNNNNNNNN.jsonl.corrupt`,
//!   a damaged segment moved aside, and `cursor.corrupt`, a copy of a
//!   damaged cursor. They are never read again.
//!
//! # Durability
//!
//! - [`Spool::push`] returns only after the line is `fdatasync`ed (and, for
//!   a new segment, its directory entry fsynced): a pushed report survives
//!   kill -9 and power loss. A push that fails (full disk, I/O error) is
//!   truncated back, so the spool holds exactly the reports whose push
//!   returned `Ok`.
//! - [`Spool::ack`] (and [`Spool::ack_through`], [`Spool::take_dropped`],
//!   [`Spool::forget_dropped`]) returns only after the cursor is durable: an
//!   acknowledged report is never returned again, not even after a crash.
//!   Segments whose every report is acknowledged are deleted afterwards; a
//!   crash before the deletion is harmless (the next open deletes them).
//! - If an operation returns an error, nothing was added or acknowledged,
//!   so the call can simply be retried (a failed push may still have
//!   dropped, and counted, the oldest segments to make room).
//! - Pushed but unacknowledged reports are replayed after a crash; the
//!   collector stores a report once however often it is sent, so replaying
//!   is safe.
//!
//! # After kill -9 (or power loss)
//!
//! [`Spool::open`] recovers: the lock dies with its process; the last line
//! of the newest segment, if incomplete or unparsable (a write cut short:
//! its push never returned `Ok`), is truncated away and counted in
//! [`Spool::recovered_torn`]; segments before the cursor are deleted. A
//! line that cannot be parsed anywhere else is not something a crash
//! produces: its segment is quarantined (see "Damaged files"). Opening
//! reads and checks every spooled line once; afterwards counts and sizes
//! are kept in memory.
//!
//! # Damaged files
//!
//! A damaged file (a disk or file system fault, a hand edit) never stops
//! the agent: [`Spool::open`] moves it aside, says so in
//! [`Spool::quarantined`] (file, line, reason, reports counted as dropped),
//! and goes on with the rest of the spool, whose reports keep their order.
//!
//! - A segment with a line that cannot be read (unparsable, or incomplete
//!   and not the torn last line of the newest segment) is renamed
//!   `NNNN.jsonl.corrupt`, whole, wherever the bad line is: its intact
//!   lines are not replayed (one rule for every segment, and the file stays
//!   exactly as found). Every unacknowledged report it held is added to
//!   [`Spool::dropped`], counted as lines: from the cursor's offset if the
//!   cursor is in that segment (else from its start), each newline-ended
//!   line and an unterminated rest count one (the rest of a line the
//!   offset falls inside counts one too), except the torn last line of the
//!   newest segment, which was never pushed `Ok`. Damage that removed or
//!   added newlines makes this an estimate. The cursor then moves to the
//!   next segment. If the newest segment is quarantined, a new one
//!   numbered past it is started: nothing is ever appended to a
//!   quarantined segment, and no segment number is reused.
//! - The count and the list of segments being quarantined are written to
//!   the cursor before the files are renamed (and the list cleared once
//!   they are, directory fsynced): a crash in between renames them at the
//!   next open without counting them again.
//! - A damaged cursor (unparsable; an offset that is not the start of a
//!   line in its segment; or a segment past the newest one, which would
//!   delete every segment as acknowledged) is copied to `cursor.corrupt`
//!   (replacing an older copy) and replaced: nothing is taken as
//!   acknowledged, so every spooled report is sent again from the oldest
//!   segment (from the start of its segment, for a bad offset). Duplicates
//!   are harmless (the collector drops reports it has by session and
//!   number); nothing is lost but, for an unparsable cursor, the count of
//!   dropped reports it held and had not reported yet (a parsable one
//!   keeps its count).
//! - At most [`QUARANTINE_KEEP`] quarantined segments are kept, the newest;
//!   an open deletes older ones. Quarantined files count against
//!   `max_bytes` (the operator's disk budget for the spool) and are the
//!   first thing deleted when a push needs room, before any report: their
//!   reports are counted already. They can be deleted at any time.
//! - A line that stops parsing while the spool is open (the file changed
//!   under it) fails [`Spool::pending`] and [`Spool::ack_through`] with
//!   [`SpoolError::Corrupt`]; the next open quarantines the segment.
//!
//! # Drop policy
//!
//! The segments and quarantined files never take more than `max_bytes`
//! together (but for files whose deletion failed, which are retried, and
//! until the first push after an open that quarantined). When a push
//! would exceed it, quarantined files are deleted first (their reports are
//! counted already), then the OLDEST whole segments (the newest reports
//! matter most: they describe the host now), never the report being
//! pushed, and the unacknowledged reports they held are added to
//! [`Spool::dropped`], like those of a quarantined segment. That count is
//! persisted with the cursor and reported to the collector in a batch's
//! `dropped` field ([`Spool::take_dropped`]), so a loss is never silent. A single report larger than `max_bytes` is
//! refused with [`SpoolError::TooLarge`]. On a disk too full even to
//! rewrite the cursor, the dropped segments are deleted first (so lowering
//! `spool_max_bytes` always makes room); the position stays right, and the
//! drop count is saved as soon as there is space again (a crash before that
//! loses only the count).
//!
//! Lowering `max_bytes` between runs is fine: the next push drops down to
//! the new bound.
//!
//! All calls do blocking file I/O: call them from a blocking thread.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use portwatch_common::wire::Report;
use rustix::fs::FlockOperation;
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

/// Size past which a new segment is started (at most a quarter of the
/// spool's `max_bytes`).
pub const SEGMENT_BYTES: u64 = 1 << 20;

const LOCK_FILE: &str = "lock";
/// How often, and how far apart, `open` tries to take the lock.
const LOCK_ATTEMPTS: u32 = 20;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(10);
const CURSOR_FILE: &str = "cursor";
const CURSOR_TMP: &str = "cursor.tmp";
const SEGMENT_SUFFIX: &str = ".jsonl";
const SEGMENT_DIGITS: usize = 20;
/// Appended to a damaged file's name when it is moved aside.
const QUARANTINE_SUFFIX: &str = ".corrupt";
const CURSOR_QUARANTINE: &str = "cursor.corrupt";

/// How many quarantined segments are kept, the newest; older ones are
/// deleted.
pub const QUARANTINE_KEEP: usize = 4;

/// One spooled report and the session it belongs to (sequence numbers
/// count within a session, and the spool may outlive one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpooledReport {
    /// The agent session that made the report.
    pub session: String,
    /// The report.
    pub report: Report,
}

/// What a shipper needs of a pending report without parsing all of it
/// (see [`Spool::pending_keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingKey {
    /// The agent session that made the report.
    pub session: String,
    /// Its sequence number.
    pub seq: u64,
    /// Bytes of its JSON, as it goes in a batch.
    pub json_bytes: u64,
    /// It is a snapshot part (which needs protocol version 2).
    pub part: bool,
    /// It starts a snapshot (a whole one, or the first part of one): the
    /// collector places it whatever came before.
    pub starts_snapshot: bool,
}

/// A spooled line with its report left as JSON.
#[derive(Deserialize)]
struct RawLine<'a> {
    #[serde(borrow)]
    session: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    report: &'a serde_json::value::RawValue,
}

fn parse_line(line: &[u8]) -> Result<RawLine<'_>, serde_json::Error> {
    serde_json::from_slice(line)
}

/// The fields of a report's JSON that [`PendingKey`] needs (the others are skipped).
#[derive(Deserialize)]
struct ReportHead {
    seq: u64,
    kind: ReportKind,
    #[serde(default)]
    part: Option<u32>,
}

/// The `kind` of a report's JSON (`portwatch_common::wire::ReportBody`'s tag).
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReportKind {
    Snapshot,
    SnapshotPart,
    Delta,
}

/// Why a spool operation failed. After an error the spool is as it was
/// before the call.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Another agent holds the spool's lock.
    #[error(
        "spool directory {dir} is in use by another portwatch agent (it holds the lock on {dir}/lock); \
         stop that agent, or give each agent its own spool directory"
    )]
    Locked {
        /// The spool directory.
        dir: PathBuf,
    },
    /// The file system holding the spool is full.
    #[error(
        "the disk holding spool directory {dir} is full (could not {action} {path}); \
         free space on that file system, or lower spool_max_bytes so the spool fits on it"
    )]
    DiskFull {
        /// The spool directory.
        dir: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure.
    #[error("could not {action} {path}; check that the agent may write there and that the disk is healthy")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A segment line read after [`Spool::open`] checked it is not a
    /// spooled report any more: the file changed under the running spool
    /// (damage that `open` finds is quarantined instead, see the module
    /// documentation).
    #[error(
        "spool file {path}, line {line}, is corrupt ({reason}); the spool cannot be replayed past it: \
         restart the agent, which moves the damaged file aside (counting its reports as dropped) \
         and goes on with the rest of the spool directory {dir}"
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// The 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: String,
        /// The spool directory.
        dir: PathBuf,
    },
    /// Segment numbers ran out (only a hand-made file name can cause this).
    #[error("spool directory {dir} has a segment numbered too high to continue; move the spool directory away")]
    SegmentsExhausted {
        /// The spool directory.
        dir: PathBuf,
    },
    /// One report is larger than the whole spool may be.
    #[error("a report of {bytes} bytes cannot fit in a spool limited to {max_bytes} bytes; raise spool_max_bytes")]
    TooLarge {
        /// The report's size as spooled.
        bytes: u64,
        /// The spool's bound.
        max_bytes: u64,
    },
    /// More reports acknowledged than are pending (a bug in the caller).
    #[error("cannot acknowledge {count} spooled reports: only {pending} are pending")]
    AckBeyondPending {
        /// What was asked.
        count: usize,
        /// What is pending.
        pending: u64,
    },
    /// A report could not be encoded.
    #[error("could not encode a report for the spool")]
    Encode(#[source] serde_json::Error),
}

/// A bounded, crash-safe, append-only spool of reports (see the module
/// documentation). Holds the spool directory's lock until dropped.
#[derive(Debug)]
pub struct Spool {
    /// Within `push_all`: appends are synced once, at its end.
    defer_sync: bool,
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Held for its `flock`.
    _lock: File,
    /// Oldest first; never empty; the last one is `current`.
    segments: VecDeque<Segment>,
    /// The last segment, opened for appending.
    current: File,
    /// A failed push left bytes past the last segment's recorded length
    /// that could not be truncated yet.
    dirty_tail: bool,
    /// Acknowledged bytes and lines at the start of the first segment.
    acked_offset: u64,
    acked_lines: u64,
    /// Sums over `segments`.
    segment_bytes_total: u64,
    lines_total: u64,
    dropped: u64,
    /// The cursor on disk lags `dropped` (see [`Spool::make_room`]).
    cursor_unsaved: bool,
    /// Acknowledged or dropped segment files whose deletion failed; retried.
    stale: Vec<(PathBuf, u64)>,
    /// Quarantined files in the directory and their sizes, deleted first to
    /// make room: the cursor's copy, then segments, oldest first.
    quarantine: VecDeque<(PathBuf, u64)>,
    /// What this open quarantined.
    quarantined: Vec<Quarantine>,
    recovered_torn: u64,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    id: u64,
    bytes: u64,
    lines: u64,
}

/// The persisted acknowledged position and drop count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    segment: u64,
    offset: u64,
    dropped: u64,
    /// Damaged segments whose reports `dropped` already counts, being
    /// moved aside by an open (cleared once they are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    quarantining: Vec<u64>,
}

/// A damaged spool file that [`Spool::open`] moved aside instead of
/// refusing to open (see "Damaged files" in the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    /// The damaged file, as it was named in the spool.
    pub file: PathBuf,
    /// Where it was moved, for inspection: it can be deleted, and the spool
    /// deletes it itself when it needs the room or newer ones push it out.
    pub kept_as: PathBuf,
    /// The 1-based number of the segment's first line that cannot be read;
    /// `None` for the cursor.
    pub line: Option<u64>,
    /// What is wrong with it.
    pub reason: String,
    /// The unacknowledged reports the segment held, counted in
    /// [`Spool::dropped`] by this open (or by an earlier one, interrupted
    /// before it moved the file); 0 for the cursor (every report is
    /// replayed).
    pub dropped: u64,
}

impl std::fmt::Display for Quarantine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (file, kept_as) = (self.file.display(), self.kept_as.display());
        match self.line {
            Some(line) => write!(
                f,
                "spool segment {file}, line {line}, is damaged ({}): moved it aside to {kept_as} and counted the {} \
                 unacknowledged reports it held as dropped (the collector is told); the rest of the spool is replayed. \
                 {kept_as} is kept for inspection and can be deleted; if this happens again, check the disk",
                self.reason, self.dropped
            ),
            None => write!(
                f,
                "spool cursor {file} is damaged ({}): kept a copy as {kept_as} and replaced it; every spooled report \
                 is sent again (the collector ignores reports it already has). {kept_as} is kept for inspection and \
                 can be deleted",
                self.reason
            ),
        }
    }
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, bounded to `max_bytes`
    /// of segments, recovers what a crash may have left, and moves damaged
    /// files aside ([`Spool::quarantined`]): it fails only when another
    /// agent holds the lock, the disk fails or is full, or segment numbers
    /// ran out, never for what the files hold.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        Self::open_with_segment_bytes(dir, max_bytes, SEGMENT_BYTES.min(max_bytes / 4).max(1))
    }

    fn open_with_segment_bytes(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Result<Spool, SpoolError> {
        let dir = dir.to_path_buf();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_error(&dir, "create the spool directory", &dir, e))?;

        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io_error(&dir, "open the spool lock", &lock_path, e))?;
        // A process forking holds a copy of the lock until it execs (its
        // copy of the descriptor closes then): wait that out briefly
        // before blaming another agent.
        let mut attempts = 0;
        loop {
            match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == Errno::WOULDBLOCK || e == Errno::AGAIN => {
                    attempts += 1;
                    if attempts == LOCK_ATTEMPTS {
                        return Err(SpoolError::Locked { dir });
                    }
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(e) => return Err(io_error(&dir, "lock", &lock_path, e.into())),
            }
        }

        let cursor_path = dir.join(CURSOR_FILE);
        // A damaged cursor: its bytes (kept as `cursor.corrupt`) and what is wrong.
        let mut damaged_cursor: Option<(Vec<u8>, String)> = None;
        let (stored, cursor_bytes) = match fs::read(&cursor_path) {
            Ok(bytes) => match serde_json::from_slice::<Cursor>(&bytes) {
                Ok(cursor) => (Some(cursor), bytes),
                Err(e) => {
                    let reason = format!("{e}; the count of dropped reports it held, not yet reported, is lost");
                    damaged_cursor = Some((bytes, reason));
                    (None, Vec::new())
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, Vec::new()),
            Err(e) => return Err(io_error(&dir, "read the spool cursor", &cursor_path, e)),
        };
        let mut cursor = stored.clone().unwrap_or_default();

        let mut ids = Vec::new();
        // Quarantined segments already there: (id, bytes); and a quarantined cursor's bytes.
        let mut copies = Vec::new();
        let mut cursor_copy = None;
        let entries = fs::read_dir(&dir).map_err(|e| io_error(&dir, "list the spool directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&dir, "list the spool directory", &dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let size = || entry.metadata().map(|m| m.len()).unwrap_or(0);
            if let Some(id) = segment_id(name) {
                ids.push(id);
            } else if let Some(id) = quarantined_id(name) {
                copies.push((id, size()));
            } else if name == CURSOR_QUARANTINE {
                cursor_copy = Some(size());
            }
        }
        ids.sort_unstable();
        let highest = ids.iter().chain(copies.iter().map(|(id, _)| id)).copied().max();

        // The spool never writes a cursor past its newest segment (a
        // quarantined newest one counts: an interrupted open may have moved
        // it): such a cursor would have every segment deleted as
        // acknowledged. Only its drop count is kept.
        if let (Some(stored), Some(newest), false) = (&stored, highest, ids.is_empty()) {
            if stored.segment > newest {
                let reason = format!("it names segment {}, past the newest segment {newest}", stored.segment);
                damaged_cursor = Some((cursor_bytes.clone(), reason));
                cursor = Cursor {
                    dropped: stored.dropped,
                    ..Cursor::default()
                };
            }
        }

        // Segments before the cursor are acknowledged or dropped: a crash
        // came between persisting the cursor and deleting them.
        let mut stale = Vec::new();
        let (gone, kept): (Vec<u64>, Vec<u64>) = ids.into_iter().partition(|&id| id < cursor.segment);
        for id in gone {
            let path = segment_path(&dir, id);
            if fs::remove_file(&path).is_err() {
                let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                stale.push((path, size));
            }
        }

        let mut segments = VecDeque::with_capacity(kept.len() + 1);
        // Segments to quarantine: (id, bytes, damage, already counted).
        let mut damaged = Vec::new();
        let mut recovered_torn = 0;
        let mut acked = (0, 0);
        let last = kept.len().checked_sub(1);
        for (i, &id) in kept.iter().enumerate() {
            let path = segment_path(&dir, id);
            let data = fs::read(&path).map_err(|e| io_error(&dir, "read spool segment", &path, e))?;
            let cursor_offset = (i == 0 && id == cursor.segment).then_some(cursor.offset);
            let scan = match scan_segment(&data, Some(i) == last, cursor_offset) {
                Ok(scan) => scan,
                Err(damage) => {
                    let counted = cursor.quarantining.contains(&id);
                    damaged.push((id, data.len() as u64, damage, counted));
                    continue;
                }
            };
            match (cursor_offset, scan.acked_lines) {
                (Some(offset), None) => {
                    // The cursor, not the segment, is wrong: replay the
                    // segment from its start.
                    let reason = format!("offset {offset} is not the start of a report in {}", path.display());
                    damaged_cursor = Some((cursor_bytes.clone(), reason));
                    cursor.offset = 0;
                }
                (_, Some(lines)) => acked = (cursor.offset, lines),
                (None, None) => {}
            }
            if scan.valid_len < data.len() as u64 {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_error(&dir, "open spool segment", &path, e))?;
                file.set_len(scan.valid_len)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io_error(&dir, "truncate the torn last line of", &path, e))?;
                recovered_torn += 1;
            }
            segments.push_back(Segment {
                id,
                bytes: scan.valid_len,
                lines: scan.lines,
            });
        }

        // Quarantine: the copy of a damaged cursor first; then count what
        // the damaged segments held and record which they are, in one
        // cursor write, before moving them (a crash in between then moves
        // them at the next open without counting them twice).
        let mut quarantined = Vec::new();
        if let Some((bytes, reason)) = damaged_cursor {
            let kept_as = dir.join(CURSOR_QUARANTINE);
            save_copy(&dir, &kept_as, &bytes)?;
            cursor_copy = Some(bytes.len() as u64);
            quarantined.push(Quarantine {
                file: cursor_path.clone(),
                kept_as,
                line: None,
                reason,
                dropped: 0,
            });
        }
        if !damaged.is_empty() {
            let counted: u64 = damaged
                .iter()
                .filter(|(_, _, _, before)| !before)
                .map(|(_, _, damage, _)| damage.unacked)
                .sum();
            cursor.dropped = cursor.dropped.saturating_add(counted);
            cursor.quarantining = damaged.iter().map(|(id, ..)| *id).collect();
            write_cursor(&dir, &cursor)?;
            for (id, bytes, damage, _) in damaged.iter() {
                let file = segment_path(&dir, *id);
                let kept_as = quarantine_path(&dir, *id);
                fs::rename(&file, &kept_as)
                    .map_err(|e| io_error(&dir, "move aside damaged spool segment", &file, e))?;
                copies.retain(|(copy, _)| copy != id);
                copies.push((*id, *bytes));
                quarantined.push(Quarantine {
                    file,
                    kept_as,
                    line: Some(damage.line),
                    reason: damage.reason.clone(),
                    dropped: damage.unacked,
                });
            }
            sync_dir(&dir)?;
        }
        // Keep the newest few quarantined segments.
        copies.sort_unstable();
        let excess = copies.len().saturating_sub(QUARANTINE_KEEP);
        for (id, bytes) in copies.drain(..excess) {
            let path = quarantine_path(&dir, id);
            if fs::remove_file(&path).is_err() && path.exists() {
                stale.push((path, bytes));
            }
        }
        let kept_copies = cursor_copy
            .map(|bytes| (dir.join(CURSOR_QUARANTINE), bytes))
            .into_iter()
            .chain(copies.into_iter().map(|(id, bytes)| (quarantine_path(&dir, id), bytes)))
            .collect();

        // Append to the newest segment, unless it was quarantined: then (or
        // with none left) start one numbered past every segment there was,
        // so the cursor cannot claim any of its bytes and no name is reused.
        let newest_quarantined = kept
            .last()
            .is_some_and(|newest| damaged.iter().any(|(id, ..)| id == newest));
        let current = match segments.back() {
            Some(last) if !newest_quarantined => {
                let path = segment_path(&dir, last.id);
                OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| io_error(&dir, "open spool segment", &path, e))?
            }
            _ => {
                let id = highest
                    .map_or(cursor.segment, |highest| highest.max(cursor.segment))
                    .checked_add(1)
                    .ok_or_else(|| SpoolError::SegmentsExhausted { dir: dir.clone() })?;
                let file = create_segment(&dir, id)?;
                segments.push_back(Segment { id, bytes: 0, lines: 0 });
                file
            }
        };

        let mut spool = Spool {
            max_bytes,
            segment_bytes,
            _lock: lock,
            segment_bytes_total: segments.iter().map(|s| s.bytes).sum(),
            lines_total: segments.iter().map(|s| s.lines).sum(),
            segments,
            current,
            dirty_tail: false,
            defer_sync: false,
            cursor_unsaved: false,
            acked_offset: acked.0,
            acked_lines: acked.1,
            dropped: cursor.dropped,
            stale,
            quarantine: kept_copies,
            quarantined,
            recovered_torn,
            dir,
        };
        // Persist where the cursor really is (its segment may be gone, or
        // it was quarantined), and delete fully acknowledged segments.
        let (first, offset, lines) = spool.skip_acked(0);
        let head = spool.segments.get(first).map_or(0, |s| s.id);
        let moved = stored.is_some_and(|c| (c.segment, c.offset) != (head, offset) || !c.quarantining.is_empty());
        if first > 0 || moved || !spool.quarantined.is_empty() {
            spool.commit(first, offset, lines, spool.dropped)?;
        }
        Ok(spool)
    }

    /// Appends `item` durably (see the module documentation), first
    /// dropping the oldest segments if the spool would exceed its bound.
    pub fn push(&mut self, item: &SpooledReport) -> Result<(), SpoolError> {
        let mut line = serde_json::to_vec(item).map_err(SpoolError::Encode)?;
        line.push(b'\n');
        let len = line.len() as u64;
        if len > self.max_bytes {
            return Err(SpoolError::TooLarge {
                bytes: len,
                max_bytes: self.max_bytes,
            });
        }
        self.retry_stale();
        if self.cursor_unsaved {
            // Best effort: on failure the count stays in memory and the
            // next commit saves it.
            let _ = self.commit(0, self.acked_offset, self.acked_lines, self.dropped);
        }
        if self.dirty_tail {
            let len = self.current_segment().bytes;
            let path = self.current_path();
            self.current
                .set_len(len)
                .and_then(|()| self.current.sync_data())
                .map_err(|e| io_error(&self.dir, "truncate a failed write in", &path, e))?;
            self.dirty_tail = false;
        }
        self.make_room(len)?;
        let current = self.current_segment();
        if current.bytes > 0 && current.bytes.saturating_add(len) > self.segment_bytes {
            self.rotate()?;
        }

        let old_len = self.current_segment().bytes;
        let defer = self.defer_sync;
        if let Err(e) = self
            .current
            .write_all(&line)
            .and_then(|()| if defer { Ok(()) } else { self.current.sync_data() })
        {
            if self
                .current
                .set_len(old_len)
                .and_then(|()| self.current.sync_data())
                .is_err()
            {
                self.dirty_tail = true;
            }
            return Err(io_error(&self.dir, "append a report to", &self.current_path(), e));
        }
        if let Some(current) = self.segments.back_mut() {
            current.bytes += len;
            current.lines += 1;
        }
        self.segment_bytes_total += len;
        self.lines_total += 1;
        Ok(())
    }

    /// Appends `items` in order, durably once it returns, with one sync of
    /// the segment for all of them rather than one each (kernel events can
    /// make thousands of reports a second). On failure, how many were
    /// appended (and are durable) before it.
    pub fn push_all(&mut self, items: &[SpooledReport]) -> Result<(), (usize, SpoolError)> {
        self.defer_sync = true;
        let mut pushed = 0;
        let mut result = Ok(());
        for item in items {
            if let Err(e) = self.push(item) {
                result = Err(e);
                break;
            }
            pushed += 1;
        }
        self.defer_sync = false;
        let synced = self
            .current
            .sync_data()
            .map_err(|e| io_error(&self.dir, "append a report to", &self.current_path(), e));
        match (result, synced) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), _) => Err((pushed, e)),
            (Ok(()), Err(e)) => Err((0, e)),
        }
    }

    /// The oldest unacknowledged reports, in push order, at most `max`.
    pub fn pending(&self, max: usize) -> Result<Vec<SpooledReport>, SpoolError> {
        let mut out = Vec::with_capacity(max.min(self.len()));
        if max == 0 {
            return Ok(out);
        }
        self.each_pending(|path, number, line| {
            out.push(serde_json::from_slice(line).map_err(|e| self.corrupt(path, number, not_a_report(&e)))?);
            Ok(out.len() < max)
        })?;
        Ok(out)
    }

    /// What identifies each of the oldest unacknowledged reports, and what
    /// a batch needs to know of it, in push order, at most `max`: read
    /// without parsing the report's listeners, so that a shipper can plan a
    /// batch of a large snapshot without holding it in memory.
    pub fn pending_keys(&self, max: usize) -> Result<Vec<PendingKey>, SpoolError> {
        let mut out = Vec::with_capacity(max.min(self.len()));
        if max == 0 {
            return Ok(out);
        }
        self.each_pending(|path, number, line| {
            let line = parse_line(line).map_err(|e| self.corrupt(path, number, not_a_report(&e)))?;
            let head: ReportHead =
                serde_json::from_str(line.report.get()).map_err(|e| self.corrupt(path, number, not_a_report(&e)))?;
            out.push(PendingKey {
                session: line.session.into_owned(),
                seq: head.seq,
                json_bytes: line.report.get().len() as u64,
                part: head.kind == ReportKind::SnapshotPart,
                starts_snapshot: match head.kind {
                    ReportKind::Snapshot => true,
                    ReportKind::SnapshotPart => head.part == Some(0),
                    ReportKind::Delta => false,
                },
            });
            Ok(out.len() < max)
        })?;
        Ok(out)
    }

    /// Calls `visit` with the JSON of each of the first `count` pending
    /// reports, in push order, as spooled: the bytes serializing the
    /// [`Report`] makes, read one line at a time, so that a batch can be
    /// encoded from the spool without a copy of its reports in memory.
    /// Returns how many it visited (fewer than `count` only if fewer are
    /// pending).
    pub fn pending_json(&self, count: usize, mut visit: impl FnMut(&[u8])) -> Result<usize, SpoolError> {
        let mut visited = 0;
        if count == 0 {
            return Ok(0);
        }
        self.each_pending(|path, number, line| {
            let line = parse_line(line).map_err(|e| self.corrupt(path, number, not_a_report(&e)))?;
            visit(line.report.get().as_bytes());
            visited += 1;
            Ok(visited < count)
        })?;
        Ok(visited)
    }

    /// Acknowledges the first `count` pending reports: they are never
    /// returned again, even after a crash. Deletes the segments left with
    /// nothing pending. Acknowledging more than [`Spool::len`] is an error
    /// and acknowledges nothing.
    ///
    /// The count is from the oldest pending report *now*: if a push dropped
    /// reports since [`Spool::pending`], it would acknowledge reports never
    /// sent. Unless no push can come in between, use [`Spool::ack_through`].
    pub fn ack(&mut self, count: usize) -> Result<(), SpoolError> {
        self.ack_counting(count, 0)
    }

    /// [`Spool::ack`], adding `dropped` to the drop count in the same
    /// durable step.
    fn ack_counting(&mut self, count: usize, dropped: u64) -> Result<(), SpoolError> {
        let pending = self.lines_total - self.acked_lines;
        if count as u64 > pending {
            return Err(SpoolError::AckBeyondPending { count, pending });
        }
        self.retry_stale();
        let mut remaining = count as u64;
        let (mut first, mut offset, mut lines) = (0, self.acked_offset, self.acked_lines);
        while let Some(segment) = self.segments.get(first).copied() {
            let unacked = segment.lines - lines;
            let is_last = first + 1 == self.segments.len();
            if remaining < unacked || is_last {
                if remaining == unacked {
                    offset = segment.bytes;
                } else if remaining > 0 {
                    offset = self.skip_lines(segment, offset, lines, remaining)?;
                }
                lines += remaining;
                break;
            }
            remaining -= unacked;
            first += 1;
            offset = 0;
            lines = 0;
        }
        if first == 0 && offset == self.acked_offset && dropped == 0 {
            return Ok(());
        }
        self.commit(first, offset, lines, self.dropped.saturating_add(dropped))
    }

    /// Acknowledges the leading pending reports of `session` numbered up to
    /// `seq`, stopping at the first report of another session or with a
    /// higher number, and returns how many it acknowledged. This is what a
    /// collector [`Ack`](portwatch_common::wire::Ack) for a batch of that
    /// session means, and it stays right if a push dropped the oldest
    /// reports (sent or not) since [`Spool::pending`].
    pub fn ack_through(&mut self, session: &str, seq: u64) -> Result<usize, SpoolError> {
        let count = self.count_through(session, seq)?;
        self.ack(count)?;
        Ok(count)
    }

    /// Gives up the reports [`Spool::ack_through`] would acknowledge (the
    /// collector refused them for good): they are never returned again and
    /// are added to [`Spool::dropped`] in the same durable step, so the loss
    /// is reported. Returns how many.
    pub fn discard_through(&mut self, session: &str, seq: u64) -> Result<usize, SpoolError> {
        let count = self.count_through(session, seq)?;
        self.ack_counting(count, count as u64)?;
        Ok(count)
    }

    /// How many leading pending reports are of `session` and numbered up to `seq`.
    fn count_through(&self, session: &str, seq: u64) -> Result<usize, SpoolError> {
        /// The part of a [`SpooledReport`] that identifies it.
        #[derive(Deserialize)]
        struct Key<'a> {
            #[serde(borrow)]
            session: std::borrow::Cow<'a, str>,
            report: KeySeq,
        }
        #[derive(Deserialize)]
        struct KeySeq {
            seq: u64,
        }
        let mut count = 0;
        self.each_pending(|path, number, line| {
            let key: Key = serde_json::from_slice(line).map_err(|e| self.corrupt(path, number, not_a_report(&e)))?;
            let acked = key.session == session && key.report.seq <= seq;
            count += usize::from(acked);
            Ok(acked)
        })?;
        Ok(count)
    }

    /// How many reports are pending (pushed and not acknowledged).
    pub fn len(&self) -> usize {
        usize::try_from(self.lines_total - self.acked_lines).unwrap_or(usize::MAX)
    }

    /// Whether no report is pending.
    pub fn is_empty(&self) -> bool {
        self.lines_total == self.acked_lines
    }

    /// Counts `count` reports lost before they reached the spool (a push
    /// that failed) as dropped, so that the loss is reported. Saved with the
    /// cursor at once if the disk allows, else at the next push or
    /// acknowledgement that can (a crash before that loses only this count).
    pub fn count_lost(&mut self, count: u64) {
        self.dropped = self.dropped.saturating_add(count);
        self.cursor_unsaved = true;
        let _ = self.commit(0, self.acked_offset, self.acked_lines, self.dropped);
    }

    /// The bound on the bytes the spool takes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes the spool's segments, quarantined files, and files whose
    /// deletion failed take on disk: what `max_bytes` bounds.
    pub fn bytes(&self) -> u64 {
        let others = self.stale.iter().chain(&self.quarantine).map(|(_, bytes)| bytes);
        self.segment_bytes_total + others.sum::<u64>()
    }

    /// Reports dropped by the size bound or lost in a quarantined segment,
    /// and not yet taken for reporting (persisted across restarts).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Returns the dropped count and durably resets it to zero, for the
    /// `dropped` field of the next batch. If that batch is never
    /// acknowledged the count is lost; [`Spool::forget_dropped`] after the
    /// acknowledgement avoids that.
    pub fn take_dropped(&mut self) -> Result<u64, SpoolError> {
        let dropped = self.dropped;
        self.forget_dropped(dropped)?;
        Ok(dropped)
    }

    /// Durably subtracts `reported` from the dropped count: call it with the
    /// `dropped` of a batch once the collector acknowledged the batch
    /// (drops counted meanwhile stay counted).
    pub fn forget_dropped(&mut self, reported: u64) -> Result<(), SpoolError> {
        if reported == 0 {
            return Ok(());
        }
        let dropped = self.dropped.saturating_sub(reported);
        self.commit(0, self.acked_offset, self.acked_lines, dropped)
    }

    /// How many torn last lines (a write cut short by a crash, never
    /// successfully pushed) [`Spool::open`] truncated away.
    pub fn recovered_torn(&self) -> u64 {
        self.recovered_torn
    }

    /// The damaged files [`Spool::open`] moved aside (see the module
    /// documentation), to be logged once.
    pub fn quarantined(&self) -> &[Quarantine] {
        &self.quarantined
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Drops the oldest segments (rotating the current one out if it must
    /// go too) until `len` more bytes fit in the bound.
    fn make_room(&mut self, len: u64) -> Result<(), SpoolError> {
        // Quarantined files go first: their reports are counted already.
        while self.bytes().saturating_add(len) > self.max_bytes {
            let Some((path, bytes)) = self.quarantine.pop_front() else {
                break;
            };
            if fs::remove_file(&path).is_err() && path.exists() {
                self.stale.push((path, bytes));
            }
        }
        let total = self.bytes();
        let (mut first, mut freed, mut lost) = (0, 0, 0);
        while total - freed + len > self.max_bytes {
            if first + 1 == self.segments.len() {
                if self.current_segment().bytes == 0 {
                    break; // only undeletable stale files are left
                }
                self.rotate()?;
            }
            let Some(segment) = self.segments.get(first) else {
                break;
            };
            lost += segment.lines - if first == 0 { self.acked_lines } else { 0 };
            freed += segment.bytes;
            first += 1;
        }
        if first == 0 {
            return Ok(());
        }
        let dropped = self.dropped + lost;
        match self.commit(first, 0, 0, dropped) {
            Err(SpoolError::DiskFull { .. }) => {
                // Too full even for the cursor: free space the only way
                // left, deleting the dropped segments before recording it.
                // The cursor on disk then names a deleted segment, which
                // `open` reads as "nothing left is acknowledged", which is
                // true; a crash before the cursor is saved would lose only
                // the drop count, so saving it is retried at once and on
                // every later push.
                self.remove_segments(first);
                self.acked_offset = 0;
                self.acked_lines = 0;
                self.dropped = dropped;
                self.cursor_unsaved = true;
                let _ = self.commit(0, 0, 0, dropped);
                Ok(())
            }
            other => other,
        }
    }

    /// Starts a new, empty current segment.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        let id = self
            .current_segment()
            .id
            .checked_add(1)
            .ok_or_else(|| SpoolError::SegmentsExhausted { dir: self.dir.clone() })?;
        self.current = create_segment(&self.dir, id)?;
        self.segments.push_back(Segment { id, bytes: 0, lines: 0 });
        Ok(())
    }

    /// From the acknowledged position, skips segments with nothing pending
    /// (except the last): the new (first segment index, offset, lines).
    fn skip_acked(&self, mut first: usize) -> (usize, u64, u64) {
        let (mut offset, mut lines) = (self.acked_offset, self.acked_lines);
        while let Some(segment) = self.segments.get(first) {
            if first + 1 == self.segments.len() || lines < segment.lines {
                break;
            }
            first += 1;
            offset = 0;
            lines = 0;
        }
        (first, offset, lines)
    }

    /// Durably makes byte `offset` (after `lines` lines) of segment `first`
    /// the acknowledged position and `dropped` the drop count, then deletes
    /// the segments before `first`. On error nothing changed.
    fn commit(&mut self, first: usize, offset: u64, lines: u64, dropped: u64) -> Result<(), SpoolError> {
        let Some(head) = self.segments.get(first) else {
            return Ok(());
        };
        write_cursor(
            &self.dir,
            &Cursor {
                segment: head.id,
                offset,
                dropped,
                quarantining: Vec::new(),
            },
        )?;
        self.cursor_unsaved = false;
        self.remove_segments(first);
        self.acked_offset = offset;
        self.acked_lines = lines;
        self.dropped = dropped;
        Ok(())
    }

    /// Forgets the first `count` segments and deletes their files.
    fn remove_segments(&mut self, count: usize) {
        let count = count.min(self.segments.len().saturating_sub(1)); // never the current one
        for segment in self.segments.drain(..count) {
            self.segment_bytes_total -= segment.bytes;
            self.lines_total -= segment.lines;
            let path = segment_path(&self.dir, segment.id);
            if fs::remove_file(&path).is_err() && path.exists() {
                self.stale.push((path, segment.bytes));
            }
        }
    }

    /// Deletes segment files that an earlier deletion failed to delete.
    fn retry_stale(&mut self) {
        self.stale
            .retain(|(path, _)| fs::remove_file(path).is_err() && path.exists());
    }

    /// Calls `visit` with each pending line (its file, 1-based line number
    /// and bytes without the newline), oldest first, until it returns false.
    fn each_pending(
        &self,
        mut visit: impl FnMut(&Path, u64, &[u8]) -> Result<bool, SpoolError>,
    ) -> Result<(), SpoolError> {
        for (i, segment) in self.segments.iter().enumerate() {
            let (from, first_line) = if i == 0 {
                (self.acked_offset, self.acked_lines)
            } else {
                (0, 0)
            };
            if from >= segment.bytes {
                continue;
            }
            let path = segment_path(&self.dir, segment.id);
            let mut reader = self.lines_of(&path, from, segment.bytes)?;
            let mut buf = Vec::new();
            let mut number = first_line;
            loop {
                number += 1;
                if !self.next_line(&mut reader, &mut buf, &path, number)? {
                    break;
                }
                if !visit(&path, number, trim_newline(&buf))? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Byte offset after `count` more lines from `offset` (after `lines`
    /// lines) of `segment`.
    fn skip_lines(&self, segment: Segment, offset: u64, lines: u64, count: u64) -> Result<u64, SpoolError> {
        let path = segment_path(&self.dir, segment.id);
        let mut reader = self.lines_of(&path, offset, segment.bytes)?;
        let mut buf = Vec::new();
        let mut offset = offset;
        for number in lines + 1..=lines + count {
            if !self.next_line(&mut reader, &mut buf, &path, number)? {
                return Err(self.corrupt(&path, number, "the file is shorter than the spool recorded"));
            }
            offset += buf.len() as u64;
        }
        Ok(offset)
    }

    /// A reader of `path` from byte `from` to byte `to`.
    fn lines_of(&self, path: &Path, from: u64, to: u64) -> Result<BufReader<io::Take<File>>, SpoolError> {
        let mut file = File::open(path).map_err(|e| io_error(&self.dir, "open spool segment", path, e))?;
        file.seek(SeekFrom::Start(from))
            .map_err(|e| io_error(&self.dir, "read spool segment", path, e))?;
        Ok(BufReader::new(file.take(to.saturating_sub(from))))
    }

    /// Reads line `number` into `buf`; false at the end.
    fn next_line(
        &self,
        reader: &mut impl BufRead,
        buf: &mut Vec<u8>,
        path: &Path,
        number: u64,
    ) -> Result<bool, SpoolError> {
        buf.clear();
        let n = reader
            .read_until(b'\n', buf)
            .map_err(|e| io_error(&self.dir, "read spool segment", path, e))?;
        if n == 0 {
            return Ok(false);
        }
        if buf.last() != Some(&b'\n') {
            return Err(self.corrupt(path, number, "the line is incomplete"));
        }
        Ok(true)
    }

    fn corrupt(&self, path: &Path, line: u64, reason: impl ToString) -> SpoolError {
        SpoolError::Corrupt {
            path: path.to_path_buf(),
            line,
            reason: reason.to_string(),
            dir: self.dir.clone(),
        }
    }

    fn current_segment(&self) -> Segment {
        // `segments` is never empty; the fallback is unreachable.
        self.segments.back().copied().unwrap_or(Segment {
            id: 0,
            bytes: 0,
            lines: 0,
        })
    }

    fn current_path(&self) -> PathBuf {
        segment_path(&self.dir, self.current_segment().id)
    }
}

/// What [`scan_segment`] found.
struct Scan {
    /// Complete, parsable lines.
    lines: u64,
    /// Bytes to keep (less than the file if its last line is torn).
    valid_len: u64,
    /// Lines before the cursor offset, if one was given and it is the
    /// start of a line.
    acked_lines: Option<u64>,
}

/// A segment line that cannot be read and is not a torn last line.
struct Damage {
    /// Its 1-based number.
    line: u64,
    /// What is wrong with it.
    reason: String,
    /// The reports the segment held from the cursor offset on (see
    /// [`unacked_lines`]).
    unacked: u64,
}

/// Checks every line of a segment. Only in the last segment may the final
/// line be torn (incomplete or unparsable: a write cut short by a crash);
/// it is excluded from `valid_len`. Any other line that cannot be read is
/// [`Damage`].
fn scan_segment(data: &[u8], is_last: bool, cursor_offset: Option<u64>) -> Result<Scan, Damage> {
    let mut pos = 0;
    let mut lines = 0;
    let mut acked_lines = (cursor_offset == Some(0)).then_some(0);
    while let Some(rest) = data.get(pos..).filter(|rest| !rest.is_empty()) {
        let end = rest.iter().position(|&b| b == b'\n');
        let problem = match end {
            None => Some("the line is incomplete".to_owned()),
            Some(end) => serde_json::from_slice::<SpooledReport>(rest.get(..end).unwrap_or_default())
                .err()
                .map(|e| not_a_report(&e)),
        };
        if let Some(reason) = problem {
            let is_final = end.is_none_or(|end| pos + end + 1 == data.len());
            if is_last && is_final {
                break;
            }
            return Err(Damage {
                line: lines + 1,
                reason,
                unacked: unacked_lines(data, cursor_offset.unwrap_or(0), is_last),
            });
        }
        pos += end.map_or(rest.len(), |end| end + 1);
        lines += 1;
        if cursor_offset == Some(pos as u64) {
            acked_lines = Some(lines);
        }
    }
    Ok(Scan {
        lines,
        valid_len: pos as u64,
        acked_lines,
    })
}

/// How many reports a damaged segment held from byte `from` on, counted
/// as lines there: each newline-terminated line, and an unterminated rest,
/// count one (so does the remainder of a line `from` falls inside), but
/// in the last segment not a torn last line (its push never returned
/// `Ok`). Damage that removed or added newlines makes this an estimate.
fn unacked_lines(data: &[u8], from: u64, is_last: bool) -> u64 {
    let rest = usize::try_from(from)
        .ok()
        .and_then(|from| data.get(from..))
        .unwrap_or_default();
    let mut count = 0;
    let mut lines = rest.split_inclusive(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let torn = is_last
            && lines.peek().is_none()
            && line
                .strip_suffix(b"\n")
                .is_none_or(|line| serde_json::from_slice::<SpooledReport>(line).is_err());
        count += u64::from(!torn);
    }
    count
}

/// Why a line is not a spooled report. Each line is parsed alone, so the
/// position is a column: serde's "at line 1 column N" would read as the
/// wrong line next to the line number of the file.
fn not_a_report(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let location = format!(" at line {} column {}", e.line(), e.column());
    let what = message.strip_suffix(&location).unwrap_or(&message);
    format!("not a spooled report: {what}, at column {}", e.column())
}

fn trim_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// The number of a segment file name, `None` for any other file.
fn segment_id(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:0width$}{SEGMENT_SUFFIX}", width = SEGMENT_DIGITS))
}

/// The number of a quarantined segment's file name, `None` for any other file.
fn quarantined_id(name: &str) -> Option<u64> {
    segment_id(name.strip_suffix(QUARANTINE_SUFFIX)?)
}

/// Where segment `id` is kept once quarantined.
fn quarantine_path(dir: &Path, id: u64) -> PathBuf {
    let mut name = segment_path(dir, id).into_os_string();
    name.push(QUARANTINE_SUFFIX);
    PathBuf::from(name)
}

/// Writes a copy of a damaged file, durably (the next directory sync makes
/// its name durable).
fn save_copy(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(|e| io_error(dir, "keep a copy of the damaged spool cursor as", path, e))
}

/// Creates an empty segment, durably, opened for appending.
fn create_segment(dir: &Path, id: u64) -> Result<File, SpoolError> {
    let path = segment_path(dir, id);
    let create = || OpenOptions::new().append(true).create_new(true).mode(0o600).open(&path);
    let file = match create() {
        // Left by a rotation whose directory sync failed: never held a report.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fs::remove_file(&path).and_then(|()| create()),
        other => other,
    }
    .map_err(|e| io_error(dir, "create spool segment", &path, e))?;
    if let Err(e) = sync_dir(dir) {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(file)
}

/// Atomically replaces the cursor file.
fn write_cursor(dir: &Path, cursor: &Cursor) -> Result<(), SpoolError> {
    let tmp = dir.join(CURSOR_TMP);
    let json = serde_json::to_vec(cursor).map_err(SpoolError::Encode)?;
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(&json)?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(dir, "write the spool cursor", &tmp, e));
    }
    let path = dir.join(CURSOR_FILE);
    fs::rename(&tmp, &path).map_err(|e| io_error(dir, "replace the spool cursor", &path, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "sync the spool directory", dir, e))
}

/// An I/O error, or [`SpoolError::DiskFull`] if the disk (or quota) is full.
fn io_error(dir: &Path, action: &'static str, path: &Path, source: io::Error) -> SpoolError {
    if matches!(Errno::from_io_error(&source), Some(Errno::NOSPC | Errno::DQUOT)) {
        SpoolError::DiskFull {
            dir: dir.to_path_buf(),
            action,
            path: path.to_path_buf(),
            source,
        }
    } else {
        SpoolError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("portwatch-spool-{name}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }

        fn spool(&self) -> PathBuf {
            self.0.join("spool")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn report(session: &str, seq: u64) -> SpooledReport {
        let report = serde_json::json!({"seq": seq, "observed_at": "2026-01-01T00:00:00Z", "kind": "delta", "opened": [], "closed": []});
        SpooledReport {
            session: session.into(),
            report: serde_json::from_value(report).unwrap(),
        }
    }

    fn line_len(item: &SpooledReport) -> u64 {
        serde_json::to_vec(item).unwrap().len() as u64 + 1
    }

    fn seqs(items: &[SpooledReport]) -> Vec<u64> {
        items.iter().map(|item| item.report.seq).collect()
    }

    fn all(spool: &Spool) -> Vec<u64> {
        seqs(&spool.pending(usize::MAX).unwrap())
    }

    fn snapshot_report(session: &str, seq: u64, part: Option<u32>) -> SpooledReport {
        let facts = serde_json::json!({"agent_version": "t", "interval_ms": 1000});
        let listener = serde_json::json!({"proto": "tcp", "family": "ipv4", "local_addr": "0.0.0.0", "local_port": 80,
            "netns": 1, "inode": 7, "uid": 0, "user": null, "exposure": "wildcard", "dual_stack": false, "processes": []});
        let report = match part {
            None => serde_json::json!({"seq": seq, "observed_at": "2026-01-01T00:00:00Z", "kind": "snapshot",
                "facts": facts, "listeners": [listener]}),
            Some(part) => {
                serde_json::json!({"seq": seq, "observed_at": "2026-01-01T00:00:00Z", "kind": "snapshot_part",
                "part": part, "parts": 2, "facts": facts, "listeners": [listener]})
            }
        };
        SpooledReport {
            session: session.into(),
            report: serde_json::from_value(report).unwrap(),
        }
    }

    #[test]
    fn pending_keys_and_json_say_what_pending_says_without_parsing_reports() {
        let dir = TempDir::new("raw");
        let mut spool = Spool::open(&dir.spool(), 1 << 20).unwrap();
        let items = [
            report("a", 1),
            snapshot_report("a", 2, None),
            snapshot_report("a\"b", 3, Some(0)),
            snapshot_report("a\"b", 4, Some(1)),
            report("a\"b", 5),
        ];
        spool.push_all(&items).unwrap();
        spool.ack(1).unwrap();
        let pending = spool.pending(usize::MAX).unwrap();
        let keys = spool.pending_keys(usize::MAX).unwrap();
        assert_eq!(keys.len(), 4);
        for (key, item) in keys.iter().zip(&pending) {
            assert_eq!(
                (key.session.as_str(), key.seq),
                (item.session.as_str(), item.report.seq)
            );
            assert_eq!(key.json_bytes, portwatch_common::wire::json_len(&item.report));
        }
        let flags: Vec<(bool, bool)> = keys.iter().map(|k| (k.part, k.starts_snapshot)).collect();
        assert_eq!(flags, [(false, true), (true, true), (true, false), (false, false)]);
        assert_eq!(spool.pending_keys(2).unwrap(), keys[..2]);

        let mut json = Vec::new();
        assert_eq!(spool.pending_json(3, |j| json.push(j.to_vec())).unwrap(), 3);
        let expected: Vec<Vec<u8>> = pending[..3]
            .iter()
            .map(|p| serde_json::to_vec(&p.report).unwrap())
            .collect();
        assert_eq!(json, expected);
        assert_eq!(spool.pending_json(10, |_| {}).unwrap(), 4);
        assert_eq!(spool.pending_json(0, |_| panic!("visited")).unwrap(), 0);
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.file_name().and_then(|n| n.to_str()).and_then(segment_id).is_some())
            .collect();
        files.sort();
        files
    }

    /// Quarantined files, sorted.
    fn quarantined_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.to_string_lossy().ends_with(QUARANTINE_SUFFIX))
            .collect();
        files.sort();
        files
    }

    /// What the spool's bound covers: segments and quarantined files.
    fn bytes_on_disk(dir: &Path) -> u64 {
        segment_files(dir)
            .iter()
            .chain(&quarantined_files(dir))
            .map(|path| fs::metadata(path).unwrap().len())
            .sum()
    }

    fn segment_number(path: &Path) -> u64 {
        path.file_name().and_then(|n| n.to_str()).and_then(segment_id).unwrap()
    }

    /// Replaces line `number` (1-based) of the segment at `path` with `text`.
    fn damage_line(path: &Path, number: usize, text: &str) {
        let data = fs::read_to_string(path).unwrap();
        let mut lines: Vec<&str> = data.lines().collect();
        lines[number - 1] = text;
        fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    /// Seqs 100..=999 make lines of one length: `L` bytes each.
    fn fixed_line() -> u64 {
        line_len(&report("s", 100))
    }

    #[test]
    fn reports_come_back_in_push_order_across_segments_and_reopen() {
        let tmp = TempDir::new("order");
        let l = fixed_line();
        let mut spool = Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 3 * l).unwrap();
        assert!(spool.is_empty());
        for seq in 100..110 {
            spool.push(&report("s", seq)).unwrap();
        }
        assert_eq!(segment_files(&tmp.spool()).len(), 4, "three lines per segment");
        assert_eq!(spool.len(), 10);
        assert_eq!(spool.bytes(), 10 * l);
        assert_eq!(spool.bytes(), bytes_on_disk(&tmp.spool()));
        assert_eq!(seqs(&spool.pending(4).unwrap()), [100, 101, 102, 103]);
        assert_eq!(all(&spool), (100..110).collect::<Vec<_>>());

        spool.ack(4).unwrap();
        assert_eq!(seqs(&spool.pending(3).unwrap()), [104, 105, 106]);
        assert_eq!(
            segment_files(&tmp.spool()).len(),
            3,
            "the fully acknowledged segment is deleted"
        );
        assert_eq!(spool.bytes(), 7 * l);
        drop(spool);

        let mut spool = Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 3 * l).unwrap();
        assert_eq!(spool.len(), 6);
        assert_eq!(spool.bytes(), 7 * l);
        assert_eq!(all(&spool), (104..110).collect::<Vec<_>>());
        spool.ack(6).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.pending(10).unwrap(), []);
        assert_eq!(segment_files(&tmp.spool()).len(), 1, "only the current segment is kept");
        spool.push(&report("s", 110)).unwrap();
        drop(spool);
        let spool = Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 3 * l).unwrap();
        assert_eq!(all(&spool), [110]);
    }

    #[test]
    fn acknowledged_reports_never_come_back_after_reopen() {
        let tmp = TempDir::new("acked");
        let l = fixed_line();
        let open = || Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 2 * l).unwrap();
        let mut spool = open();
        for seq in 100..105 {
            spool.push(&report("s", seq)).unwrap();
        }
        spool.ack(1).unwrap(); // mid-segment
        drop(spool);
        let mut spool = open();
        assert_eq!(all(&spool), [101, 102, 103, 104]);
        spool.ack(2).unwrap(); // ends a segment
        drop(spool);
        let mut spool = open();
        assert_eq!(all(&spool), [103, 104]);
        spool.ack(0).unwrap();
        spool.ack(2).unwrap();
        drop(spool);
        let mut spool = open();
        assert!(spool.is_empty());
        assert_eq!(spool.pending(usize::MAX).unwrap(), []);
        spool.push(&report("s", 105)).unwrap();
        drop(spool);
        assert_eq!(all(&open()), [105]);
    }

    #[test]
    fn acknowledging_more_than_pending_is_refused_and_acknowledges_nothing() {
        let tmp = TempDir::new("overack");
        let mut spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        spool.push(&report("s", 1)).unwrap();
        let err = spool.ack(2).unwrap_err();
        assert!(
            matches!(err, SpoolError::AckBeyondPending { count: 2, pending: 1 }),
            "{err}"
        );
        assert_eq!(all(&spool), [1]);
    }

    #[test]
    fn acknowledging_through_a_report_stops_at_its_session_and_number() {
        let tmp = TempDir::new("through");
        let mut spool = Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 150).unwrap();
        for item in [report("old", 7), report("old", 8), report("new", 1), report("new", 2)] {
            spool.push(&item).unwrap();
        }
        assert_eq!(
            spool.ack_through("new", 5).unwrap(),
            0,
            "the oldest pending are of another session"
        );
        assert_eq!(spool.ack_through("old", 7).unwrap(), 1);
        assert_eq!(
            spool.ack_through("old", 100).unwrap(),
            1,
            "stops where the session ends"
        );
        assert_eq!(spool.ack_through("new", 2).unwrap(), 2);
        assert!(spool.is_empty());
        assert_eq!(spool.ack_through("new", 2).unwrap(), 0);
    }

    #[test]
    fn reports_lost_before_the_spool_are_counted_and_the_count_is_kept() {
        let tmp = TempDir::new("lost");
        let mut spool = Spool::open(&tmp.spool(), 1 << 30).unwrap();
        spool.push(&report("a", 1)).unwrap();
        spool.count_lost(2);
        assert_eq!((all(&spool), spool.dropped()), (vec![1], 2));
        drop(spool);
        let spool = Spool::open(&tmp.spool(), 1 << 30).unwrap();
        assert_eq!((all(&spool), spool.dropped()), (vec![1], 2), "durable");
    }

    #[test]
    fn discarded_reports_are_never_returned_again_and_are_counted_as_dropped() {
        let tmp = TempDir::new("discard");
        let mut spool = Spool::open(&tmp.spool(), 1 << 30).unwrap();
        for seq in 1..=5 {
            spool.push(&report("a", seq)).unwrap();
        }
        spool.push(&report("b", 1)).unwrap();
        assert_eq!(spool.discard_through("a", 3).unwrap(), 3);
        assert_eq!((all(&spool), spool.dropped()), (vec![4, 5, 1], 3));
        drop(spool);
        let mut spool = Spool::open(&tmp.spool(), 1 << 30).unwrap();
        assert_eq!((all(&spool), spool.dropped()), (vec![4, 5, 1], 3), "durable");
        // Stops at another session, like ack_through.
        assert_eq!(spool.discard_through("a", u64::MAX).unwrap(), 2);
        assert_eq!((all(&spool), spool.dropped()), (vec![1], 5));
        assert_eq!(spool.discard_through("a", u64::MAX).unwrap(), 0);
        assert_eq!(spool.dropped(), 5);
    }

    #[test]
    fn acknowledging_through_a_report_dropped_since_it_was_sent_acknowledges_nothing_unsent() {
        let tmp = TempDir::new("through-drop");
        let l = fixed_line();
        let mut spool = Spool::open_with_segment_bytes(&tmp.spool(), 6 * l, 2 * l).unwrap();
        for seq in 100..106 {
            spool.push(&report("s", seq)).unwrap();
        }
        let sent = spool.pending(3).unwrap(); // 100..=102, then the spool overflows
        for seq in 106..110 {
            spool.push(&report("s", seq)).unwrap();
        }
        assert_eq!(spool.dropped(), 4);
        assert_eq!(all(&spool), (104..110).collect::<Vec<_>>());
        let last_sent = sent.last().unwrap().report.seq;
        assert_eq!(spool.ack_through("s", last_sent).unwrap(), 0);
        assert_eq!(
            all(&spool),
            (104..110).collect::<Vec<_>>(),
            "nothing unsent was acknowledged"
        );
    }

    #[test]
    fn random_push_ack_reopen_sequences_behave_like_a_queue() {
        let tmp = TempDir::new("model");
        let open = || Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 200).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut spool = open();
        let mut model = VecDeque::new();
        let mut seq = 0;
        for _ in 0..400 {
            match random(10) {
                0..=4 => {
                    for _ in 0..random(4) {
                        seq += 1;
                        spool.push(&report("m", seq)).unwrap();
                        model.push_back(seq);
                    }
                }
                5..=7 => {
                    let count = random(model.len() as u64 + 1) as usize;
                    spool.ack(count).unwrap();
                    model.drain(..count);
                }
                8 => {
                    drop(spool);
                    spool = open();
                }
                _ => {
                    let max = random(5) as usize;
                    let want: Vec<u64> = model.iter().take(max).copied().collect();
                    assert_eq!(seqs(&spool.pending(max).unwrap()), want);
                }
            }
            assert_eq!(spool.len(), model.len());
            assert_eq!(all(&spool), Vec::from(model.clone()));
            assert_eq!(spool.bytes(), bytes_on_disk(&tmp.spool()));
            if model.is_empty() {
                assert_eq!(
                    segment_files(&tmp.spool()).len(),
                    1,
                    "acknowledged segments are deleted"
                );
            }
        }
        assert!(seq > 300, "the sequence pushed something: {seq}");
    }

    #[test]
    fn a_torn_trailing_line_is_truncated_and_counted() {
        let tmp = TempDir::new("torn");
        let mut spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        for seq in 1..=3 {
            spool.push(&report("s", seq)).unwrap();
        }
        let before = spool.bytes();
        drop(spool);
        let last = segment_files(&tmp.spool()).pop().unwrap();
        let mut file = OpenOptions::new().append(true).open(&last).unwrap();
        file.write_all(br#"{"session":"s","report":{"seq":4,"obs"#).unwrap();
        drop(file);

        let mut spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        assert_eq!(spool.recovered_torn(), 1);
        assert_eq!(spool.bytes(), before);
        assert_eq!(
            fs::metadata(&last).unwrap().len(),
            before,
            "the torn bytes are gone from disk"
        );
        assert_eq!(all(&spool), [1, 2, 3]);
        spool.push(&report("s", 4)).unwrap();
        drop(spool);
        let spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        assert_eq!(spool.recovered_torn(), 0);
        assert_eq!(all(&spool), [1, 2, 3, 4]);
    }

    #[test]
    fn a_corrupt_middle_line_quarantines_its_segment_naming_file_and_line() {
        let tmp = TempDir::new("corrupt");
        let mut spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        for seq in 1..=3 {
            spool.push(&report("s", seq)).unwrap();
        }
        drop(spool);
        let segment = segment_files(&tmp.spool()).pop().unwrap();
        damage_line(&segment, 2, "not json");
        let damaged = fs::read(&segment).unwrap();

        let spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        let [q] = spool.quarantined() else {
            panic!("{:?}", spool.quarantined());
        };
        assert_eq!(q.file, segment);
        assert_eq!(q.kept_as, quarantine_path(&tmp.spool(), segment_number(&segment)));
        assert_eq!(q.line, Some(2));
        assert_eq!(q.reason, "not a spooled report: expected ident, at column 2");
        assert_eq!(q.dropped, 3, "the intact lines 1 and 3 are counted too");
        let message = q.to_string();
        assert!(message.contains(&segment.display().to_string()), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("counted the 3 unacknowledged reports"), "{message}");
        assert!(message.contains("can be deleted"), "{message}");
        assert!(!segment.exists());
        assert_eq!(fs::read(&q.kept_as).unwrap(), damaged, "kept exactly as found");
        assert_eq!(spool.dropped(), 3);
        assert!(spool.is_empty());
    }

    #[test]
    fn a_damaged_older_segment_is_quarantined_and_the_rest_replayed_in_order() {
        let tmp = TempDir::new("quarantine");
        let l = fixed_line();
        let open = || Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 3 * l).unwrap();
        let mut spool = open();
        for seq in 100..110 {
            spool.push(&report("s", seq)).unwrap();
        }
        drop(spool);
        // Segments 100-102, 103-105, 106-108, 109: damage the second.
        let second = segment_files(&tmp.spool()).remove(1);
        damage_line(&second, 2, "not json");

        let mut spool = open();
        assert_eq!(spool.quarantined().len(), 1);
        assert_eq!(spool.dropped(), 3, "103, 104 and 105 are lost and counted");
        assert_eq!(all(&spool), [100, 101, 102, 106, 107, 108, 109]);
        assert_eq!(
            quarantined_files(&tmp.spool()),
            [quarantine_path(&tmp.spool(), segment_number(&second))]
        );
        assert_eq!(spool.bytes(), bytes_on_disk(&tmp.spool()));

        // The agent goes on: push, send, acknowledge.
        spool.push(&report("s", 110)).unwrap();
        let sent = spool.pending(4).unwrap();
        assert_eq!(seqs(&sent), [100, 101, 102, 106]);
        assert_eq!(spool.ack_through("s", 106).unwrap(), 4);
        assert_eq!(all(&spool), [107, 108, 109, 110]);
        drop(spool);

        let mut spool = open();
        assert_eq!(spool.quarantined(), [], "quarantined once, not again");
        assert_eq!(spool.dropped(), 3, "counted once, and persisted");
        assert_eq!(all(&spool), [107, 108, 109, 110]);
        assert_eq!(spool.take_dropped().unwrap(), 3);
        drop(spool);
        let spool = open();
        assert_eq!(spool.dropped(), 0);
        assert_eq!(quarantined_files(&tmp.spool()).len(), 1, "kept for inspection");
    }

    #[test]
    fn a_damaged_segment_holding_the_cursor_counts_only_its_unacknowledged_reports() {
        let tmp = TempDir::new("quarantine-cursor");
        let l = fixed_line();
        let open = || Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 3 * l).unwrap();
        let mut spool = open();
        for seq in 100..109 {
            spool.push(&report("s", seq)).unwrap();
        }
        spool.ack(1).unwrap(); // 100: the cursor is at byte L of the first segment
        drop(spool);
        let first = segment_files(&tmp.spool()).remove(0);
        damage_line(&first, 3, "not json");

        let mut spool = open();
        assert_eq!(
            spool.quarantined()[0].dropped,
            2,
            "101 and 102, not the acknowledged 100"
        );
        assert_eq!(spool.dropped(), 2);
        assert_eq!(all(&spool), (103..109).collect::<Vec<_>>());
        spool.ack(1).unwrap();
        drop(spool);

        let spool = open();
        assert_eq!(spool.dropped(), 2);
        assert_eq!(all(&spool), (104..109).collect::<Vec<_>>());
    }

    #[test]
    fn a_damaged_middle_line_in_the_newest_segment_quarantines_it_and_starts_a_new_one() {
        let tmp = TempDir::new("quarantine-newest");
        let l = fixed_line();
        let open = || Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 4 * l).unwrap();
        let mut spool = open();
        for seq in 100..108 {
            spool.push(&report("s", seq)).unwrap();
        }
        drop(spool);
        // Segments 100-103 and 104-107: damage the newest, which also has a
        // torn last line (never pushed `Ok`, so not counted).
        let newest = segment_files(&tmp.spool()).pop().unwrap();
        damage_line(&newest, 2, "not json");
        let mut file = OpenOptions::new().append(true).open(&newest).unwrap();
        file.write_all(br#"{"session":"s","report":{"seq":108"#).unwrap();
        drop(file);
        let damaged = fs::read(&newest).unwrap();

        let mut spool = open();
        assert_eq!(spool.quarantined()[0].line, Some(2));
        assert_eq!(spool.dropped(), 4, "104, the damaged 105, 106 and 107");
        assert_eq!(spool.recovered_torn(), 0);
        assert_eq!(all(&spool), [100, 101, 102, 103]);
        spool.push(&report("s", 108)).unwrap();
        let segments = segment_files(&tmp.spool());
        assert_eq!(segments.len(), 2, "{segments:?}");
        assert_eq!(
            segment_number(&segments[1]),
            segment_number(&newest) + 1,
            "a new segment, numbered past the quarantined one"
        );
        let kept_as = quarantine_path(&tmp.spool(), segment_number(&newest));
        assert_eq!(
            fs::read(&kept_as).unwrap(),
            damaged,
            "nothing appended to the quarantined segment"
        );
        drop(spool);

        let spool = open();
        assert_eq!(all(&spool), [100, 101, 102, 103, 108]);
        assert_eq!(spool.dropped(), 4);
    }

    #[test]
    fn an_incomplete_line_in_an_older_segment_is_damage_not_a_torn_write() {
        let tmp = TempDir::new("oldtorn");
        let l = fixed_line();
        let mut spool = Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 2 * l).unwrap();
        for seq in 100..105 {
            spool.push(&report("s", seq)).unwrap();
        }
        drop(spool);
        let first = segment_files(&tmp.spool()).remove(0);
        let mut file = OpenOptions::new().append(true).open(&first).unwrap();
        file.write_all(b"{\"session\"").unwrap();
        drop(file);
        let spool = Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 2 * l).unwrap();
        assert_eq!(spool.quarantined()[0].line, Some(3));
        assert!(
            spool.quarantined()[0].reason.contains("incomplete"),
            "{:?}",
            spool.quarantined()
        );
        assert_eq!(spool.recovered_torn(), 0);
        assert_eq!(
            spool.dropped(),
            3,
            "an older segment's incomplete rest was a report too"
        );
        assert_eq!(all(&spool), [102, 103, 104]);
    }

    #[test]
    fn an_open_interrupted_while_quarantining_does_not_count_twice() {
        let tmp = TempDir::new("quarantine-crash");
        let l = fixed_line();
        let open = || Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 3 * l).unwrap();
        let mut spool = open();
        for seq in 100..106 {
            spool.push(&report("s", seq)).unwrap();
        }
        drop(spool);
        let first = segment_files(&tmp.spool()).remove(0);
        let id = segment_number(&first);
        damage_line(&first, 2, "not json");
        // An open counted the segment and died before moving it aside.
        let cursor = tmp.spool().join(CURSOR_FILE);
        let counted = format!(r#"{{"segment":{id},"offset":0,"dropped":3,"quarantining":[{id}]}}"#);
        fs::write(&cursor, &counted).unwrap();

        let spool = open();
        assert_eq!(spool.quarantined()[0].dropped, 3);
        assert_eq!(spool.dropped(), 3, "counted once");
        assert_eq!(all(&spool), [103, 104, 105]);
        assert!(!first.exists());
        assert!(!fs::read_to_string(&cursor).unwrap().contains("quarantining"));
        drop(spool);

        // An open died after moving it aside, before clearing the list.
        fs::write(&cursor, &counted).unwrap();
        let spool = open();
        assert_eq!(spool.quarantined(), []);
        assert_eq!(spool.dropped(), 3);
        assert_eq!(all(&spool), [103, 104, 105]);
        assert!(!fs::read_to_string(&cursor).unwrap().contains("quarantining"));
    }

    #[test]
    fn at_most_a_few_quarantined_segments_are_kept_the_oldest_deleted() {
        let tmp = TempDir::new("quarantine-bound");
        let l = fixed_line();
        let open = || Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, l).unwrap();
        let mut spool = open();
        for seq in 100..110 {
            spool.push(&report("s", seq)).unwrap(); // one per segment
        }
        drop(spool);
        let segments = segment_files(&tmp.spool());
        for segment in &segments[..3] {
            damage_line(segment, 1, "not json");
        }
        let spool = open();
        assert_eq!(spool.quarantined().len(), 3);
        assert_eq!(quarantined_files(&tmp.spool()).len(), 3);
        drop(spool);

        for segment in &segments[3..6] {
            damage_line(segment, 1, "not json");
        }
        let spool = open();
        assert_eq!(spool.quarantined().len(), 3);
        let kept: Vec<PathBuf> = segments[6 - QUARANTINE_KEEP..6]
            .iter()
            .map(|segment| quarantine_path(&tmp.spool(), segment_number(segment)))
            .collect();
        assert_eq!(quarantined_files(&tmp.spool()), kept, "the newest {QUARANTINE_KEEP}");
        assert_eq!(spool.dropped(), 6, "a deleted copy's reports stay counted");
        assert_eq!(all(&spool), [106, 107, 108, 109]);
        assert_eq!(spool.bytes(), bytes_on_disk(&tmp.spool()));
    }

    #[test]
    fn quarantined_files_give_way_before_any_report_when_the_spool_is_full() {
        let tmp = TempDir::new("quarantine-room");
        let l = fixed_line();
        let open = || Spool::open_with_segment_bytes(&tmp.spool(), 10 * l, 3 * l).unwrap();
        let mut spool = open();
        for seq in 100..110 {
            spool.push(&report("s", seq)).unwrap();
        }
        drop(spool);
        // Segments 100-102, 103-105, 106-108, 109: the spool is full.
        let second = segment_files(&tmp.spool()).remove(1);
        let garbage = "x".repeat(usize::try_from(l).unwrap() - 1);
        damage_line(&second, 1, &garbage);

        let mut spool = open();
        assert_eq!(spool.dropped(), 3);
        assert_eq!(
            spool.bytes(),
            10 * l,
            "the quarantined segment counts against the bound"
        );
        spool.push(&report("s", 110)).unwrap();
        assert_eq!(
            quarantined_files(&tmp.spool()),
            Vec::<PathBuf>::new(),
            "deleted to make room"
        );
        assert_eq!(spool.dropped(), 3, "no report was dropped for the room");
        assert_eq!(all(&spool), [100, 101, 102, 106, 107, 108, 109, 110]);
        assert_eq!(spool.bytes(), 8 * l);
        assert_eq!(spool.bytes(), bytes_on_disk(&tmp.spool()));
    }

    #[test]
    fn a_corrupt_cursor_is_set_aside_and_every_report_replayed() {
        let tmp = TempDir::new("cursor");
        let mut spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        for seq in 1..=3 {
            spool.push(&report("s", seq)).unwrap();
        }
        spool.ack(1).unwrap();
        drop(spool);
        let cursor = tmp.spool().join(CURSOR_FILE);
        fs::write(&cursor, "{garbage").unwrap();

        let spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        let [q] = spool.quarantined() else {
            panic!("{:?}", spool.quarantined());
        };
        assert_eq!((&q.file, q.line, q.dropped), (&cursor, None, 0));
        assert_eq!(q.kept_as, tmp.spool().join(CURSOR_QUARANTINE));
        assert_eq!(fs::read_to_string(&q.kept_as).unwrap(), "{garbage");
        assert!(q.reason.contains("is lost"), "{q}");
        let message = q.to_string();
        assert!(message.contains(&cursor.display().to_string()), "{message}");
        assert!(message.contains("every spooled report is sent again"), "{message}");
        assert!(message.contains("can be deleted"), "{message}");
        assert_eq!(
            all(&spool),
            [1, 2, 3],
            "the acknowledged 1 is sent again, nothing is lost"
        );
        drop(spool);

        let spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        assert_eq!(spool.quarantined(), [], "the cursor was replaced");
        assert_eq!(all(&spool), [1, 2, 3]);
        assert_eq!(spool.bytes(), bytes_on_disk(&tmp.spool()));
    }

    #[test]
    fn a_cursor_that_does_not_fit_the_segments_replays_them_and_keeps_its_drop_count() {
        let tmp = TempDir::new("cursor-misfit");
        let mut spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        for seq in 1..=3 {
            spool.push(&report("s", seq)).unwrap();
        }
        drop(spool);
        let id = segment_number(&segment_files(&tmp.spool())[0]);
        let cursor = tmp.spool().join(CURSOR_FILE);

        fs::write(&cursor, format!(r#"{{"segment":{id},"offset":5,"dropped":7}}"#)).unwrap();
        let spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        let reason = &spool.quarantined()[0].reason;
        assert!(reason.contains("offset 5 is not the start of a report"), "{reason}");
        assert_eq!(all(&spool), [1, 2, 3]);
        assert_eq!(spool.dropped(), 7);
        drop(spool);

        // Past the newest segment: every segment would be taken as acknowledged.
        fs::write(&cursor, format!(r#"{{"segment":{},"offset":0,"dropped":2}}"#, id + 3)).unwrap();
        let spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        let reason = &spool.quarantined()[0].reason;
        assert!(reason.contains("past the newest segment"), "{reason}");
        assert_eq!(all(&spool), [1, 2, 3]);
        assert_eq!(spool.dropped(), 2);
        drop(spool);
        let spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        assert_eq!(spool.quarantined(), []);
        assert_eq!(all(&spool), [1, 2, 3]);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_segments_and_counts_every_dropped_report() {
        let tmp = TempDir::new("bound");
        let l = fixed_line();
        let open = || Spool::open_with_segment_bytes(&tmp.spool(), 10 * l, 3 * l).unwrap();
        let mut spool = open();
        for seq in 100..120 {
            spool.push(&report("s", seq)).unwrap();
            assert!(spool.bytes() <= 10 * l);
            assert_eq!(spool.bytes(), bytes_on_disk(&tmp.spool()));
        }
        // Segments of 3 lines: 100-102, 103-105, 106-108, 109-111 went
        // whole; 112-119 remain.
        assert_eq!(spool.dropped(), 12);
        assert_eq!(all(&spool), (112..120).collect::<Vec<_>>());

        // A dropped segment's acknowledged reports are not counted as lost.
        spool.ack(1).unwrap(); // 112
        for seq in 120..123 {
            spool.push(&report("s", seq)).unwrap();
        }
        assert_eq!(spool.dropped(), 14, "113 and 114 were lost, 112 was delivered");
        assert_eq!(all(&spool), (115..123).collect::<Vec<_>>());
        drop(spool);

        let mut spool = open();
        assert_eq!(spool.dropped(), 14, "the count survives a restart");
        assert_eq!(spool.take_dropped().unwrap(), 14);
        assert_eq!(spool.dropped(), 0);
        assert_eq!(spool.take_dropped().unwrap(), 0);
        drop(spool);
        let mut spool = open();
        assert_eq!(spool.dropped(), 0, "taking the count is persisted");

        for seq in 123..126 {
            spool.push(&report("s", seq)).unwrap();
        }
        assert_eq!(spool.dropped(), 3);
        spool.forget_dropped(1).unwrap();
        drop(spool);
        let spool = open();
        assert_eq!(spool.dropped(), 2);
        assert_eq!(all(&spool).last(), Some(&125));
    }

    #[test]
    fn a_spool_smaller_than_a_segment_still_keeps_its_bound() {
        let tmp = TempDir::new("small");
        let l = fixed_line();
        // One segment could hold everything: the current one is rotated out.
        let mut spool = Spool::open_with_segment_bytes(&tmp.spool(), 4 * l, 100 * l).unwrap();
        for seq in 100..110 {
            spool.push(&report("s", seq)).unwrap();
            assert!(spool.bytes() <= 4 * l, "{} > {}", spool.bytes(), 4 * l);
        }
        assert_eq!(spool.dropped() + spool.len() as u64, 10);
        assert_eq!(all(&spool).last(), Some(&109));
    }

    #[test]
    fn a_report_larger_than_the_whole_spool_is_refused() {
        let tmp = TempDir::new("toolarge");
        let item = report("s", 1);
        let mut spool = Spool::open(&tmp.spool(), line_len(&item) - 1).unwrap();
        let err = spool.push(&item).unwrap_err();
        assert!(matches!(err, SpoolError::TooLarge { .. }), "{err:?}");
        assert!(err.to_string().contains("raise spool_max_bytes"), "{err}");
        assert!(spool.is_empty());
    }

    #[test]
    fn a_second_open_of_a_spool_in_use_is_refused() {
        let tmp = TempDir::new("lock");
        let first = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        let err = Spool::open(&tmp.spool(), 1 << 20).unwrap_err();
        assert!(matches!(err, SpoolError::Locked { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&tmp.spool().display().to_string()), "{message}");
        assert!(message.contains("another portwatch agent"), "{message}");
        drop(first);
        Spool::open(&tmp.spool(), 1 << 20).unwrap();
    }

    #[test]
    fn the_spool_directory_is_private() {
        let tmp = TempDir::new("mode");
        let mut spool = Spool::open(&tmp.spool(), 1 << 20).unwrap();
        spool.push(&report("s", 1)).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tmp.spool()), 0o700);
        assert_eq!(mode(&segment_files(&tmp.spool())[0]), 0o600);
    }

    #[test]
    fn reports_of_two_sessions_keep_their_push_order() {
        let tmp = TempDir::new("sessions");
        let mut spool = Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 150).unwrap();
        let pushed = [
            report("old", 7),
            report("old", 8),
            report("new", 1),
            report("new", 2),
            report("new", 3),
        ];
        for item in &pushed {
            spool.push(item).unwrap();
        }
        assert_eq!(spool.pending(10).unwrap(), pushed);
        drop(spool);
        let mut spool = Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 150).unwrap();
        assert_eq!(spool.pending(10).unwrap(), pushed);
        spool.ack(2).unwrap();
        assert_eq!(spool.pending(10).unwrap(), pushed[2..]);
    }

    #[test]
    fn a_crash_before_ack_replays_every_unacked_report_exactly_once() {
        let tmp = TempDir::new("crash");
        let open = || Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 200).unwrap();
        let mut spool = open();
        for seq in 1..=7 {
            spool.push(&report("s", seq)).unwrap();
        }
        let mut delivered = Vec::new();
        // Sent, then the agent dies before the collector's ack arrives.
        assert_eq!(seqs(&spool.pending(5).unwrap()), [1, 2, 3, 4, 5]);
        drop(spool);

        let mut spool = open();
        assert_eq!(all(&spool), [1, 2, 3, 4, 5, 6, 7], "nothing unacked is lost");
        let batch = spool.pending(5).unwrap();
        delivered.extend(seqs(&batch));
        spool.ack(batch.len()).unwrap();
        drop(spool);

        let mut spool = open();
        let batch = spool.pending(5).unwrap();
        delivered.extend(seqs(&batch));
        spool.ack(batch.len()).unwrap();
        assert_eq!(
            delivered,
            [1, 2, 3, 4, 5, 6, 7],
            "each report acknowledged exactly once"
        );
        drop(spool);
        assert!(open().is_empty());
    }

    const CHILD_DIR: &str = "PORTWATCH_SPOOL_KILL_TEST_DIR";

    #[test]
    #[ignore = "the child process of kill_9_during_pushes_and_acks_loses_and_repeats_nothing"]
    fn kill_9_child_pushes_and_acks_until_killed() {
        let Some(dir) = std::env::var_os(CHILD_DIR) else {
            return;
        };
        let mut spool = Spool::open_with_segment_bytes(Path::new(&dir), 1 << 20, 600).unwrap();
        let start = spool
            .pending(usize::MAX)
            .unwrap()
            .last()
            .map_or(1, |item| item.report.seq + 1);
        let mut acked = 0;
        for seq in start.. {
            spool.push(&report("k", seq)).unwrap();
            println!("pushed {seq}");
            if seq % 7 == 0 {
                spool.ack(3).unwrap();
                acked += 3;
                println!("acked {acked}");
            }
        }
    }

    /// Runs the child on the spool in `dir`, kills it with SIGKILL after
    /// it printed `pushes` pushes and `delay` more, and returns the last
    /// push and the acknowledgements it printed.
    fn push_until_killed(dir: &Path, pushes: u64, delay: std::time::Duration) -> (Option<u64>, u64) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "spool::tests::kill_9_child_pushes_and_acks_until_killed"])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut count, mut last, mut acked, mut killed) = (0, None, 0, false);
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("pushed ") {
                last = Some(n.parse().unwrap());
                count += 1;
            } else if let Some(n) = line.strip_prefix("acked ") {
                acked = n.parse().unwrap();
            }
            if count >= pushes && !killed {
                std::thread::sleep(delay);
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        child.wait().unwrap();
        assert!(killed, "the child pushed only {count} reports");
        (last, acked)
    }

    #[test]
    fn kill_9_during_pushes_and_acks_loses_and_repeats_nothing() {
        let tmp = TempDir::new("kill9");
        let open = || Spool::open_with_segment_bytes(&tmp.spool(), 1 << 20, 600).unwrap();
        let (mut first, mut last) = (1, 0);
        for round in 0..4 {
            let delay = std::time::Duration::from_micros(round * 700);
            let (pushed, acked) = push_until_killed(&tmp.spool(), 40 + 17 * round, delay);
            let pushed = pushed.unwrap();
            let spool = open();
            let spooled = all(&spool);
            let (new_first, new_last) = (spooled[0], *spooled.last().unwrap());
            // The child may have finished one push or ack it did not print.
            assert!(
                new_first == first + acked || new_first == first + acked + 3,
                "round {round}: first {new_first}, was {first}, printed acked {acked}"
            );
            assert!(
                new_last == pushed || new_last == pushed + 1,
                "round {round}: last {new_last}, printed pushed {pushed}"
            );
            assert_eq!(spooled, (new_first..=new_last).collect::<Vec<_>>(), "no gap, no repeat");
            assert!(pushed > last, "round {round} continued where the last one stopped");
            assert_eq!(spool.bytes(), bytes_on_disk(&tmp.spool()));
            (first, last) = (new_first, new_last);
        }
    }

    /// A 64 KiB tmpfs under `tmp`, unmounted on drop; `None` (after
    /// printing why the test is not run) where it cannot be mounted.
    fn tmpfs(tmp: &TempDir, test: &str) -> Option<Mount> {
        if !rustix::process::geteuid().is_root() {
            println!("NOT RUN: {test}: mounting a tmpfs needs root");
            return None;
        }
        let mnt = tmp.0.join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&mnt)
            .status();
        if !matches!(mounted, Ok(status) if status.success()) {
            println!("NOT RUN: {test}: cannot mount a tmpfs ({mounted:?})");
            return None;
        }
        Some(Mount(mnt))
    }

    /// Unmounts on drop.
    struct Mount(PathBuf);

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }

    fn big_report(seq: u64) -> SpooledReport {
        report(&format!("session-{}", "x".repeat(1500)), seq)
    }

    #[test]
    fn a_push_on_a_full_disk_fails_clearly_and_keeps_every_earlier_report() {
        let tmp = TempDir::new("enospc");
        let Some(mount) = tmpfs(
            &tmp,
            "a_push_on_a_full_disk_fails_clearly_and_keeps_every_earlier_report",
        ) else {
            return;
        };
        let mnt = &mount.0;
        let filler = mnt.join("filler");
        fs::write(&filler, vec![0; 16 << 10]).unwrap();
        let dir = mnt.join("spool");

        let mut spool = Spool::open(&dir, 1 << 20).unwrap();
        let mut pushed = Vec::new();
        let mut seq = 0;
        let err = loop {
            seq += 1;
            match spool.push(&big_report(seq)) {
                Ok(()) => pushed.push(seq),
                Err(e) => break e,
            }
            assert!(seq < 1000, "the 64 KiB tmpfs never filled up");
        };
        assert!(matches!(err, SpoolError::DiskFull { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("is full"), "{message}");
        assert!(message.contains("free space"), "{message}");
        assert!(message.contains("spool_max_bytes"), "{message}");
        assert!(pushed.len() > 5, "{pushed:?}");
        assert_eq!(spool.bytes(), bytes_on_disk(&dir), "the partial line was truncated");
        assert_eq!(all(&spool), pushed);
        // Still full: refused again, and still consistent.
        assert!(spool.push(&big_report(seq)).is_err());
        assert_eq!(spool.bytes(), bytes_on_disk(&dir));

        fs::remove_file(&filler).unwrap();
        spool.push(&big_report(seq)).unwrap();
        pushed.push(seq);
        spool.ack(2).unwrap();
        drop(spool);

        let spool = Spool::open(&dir, 1 << 20).unwrap();
        assert_eq!(spool.recovered_torn(), 0);
        assert_eq!(all(&spool), pushed[2..]);
    }

    #[test]
    fn lowering_spool_max_bytes_on_a_full_disk_makes_room() {
        let tmp = TempDir::new("enospc-lower");
        let Some(mount) = tmpfs(&tmp, "lowering_spool_max_bytes_on_a_full_disk_makes_room") else {
            return;
        };
        let dir = mount.0.join("spool");
        let segment = 8 << 10;
        let mut spool = Spool::open_with_segment_bytes(&dir, 1 << 20, segment).unwrap();
        let mut seq = 0;
        let err = loop {
            seq += 1;
            if let Err(e) = spool.push(&big_report(seq)) {
                break e;
            }
            assert!(seq < 1000, "the 64 KiB tmpfs never filled up");
        };
        assert!(matches!(err, SpoolError::DiskFull { .. }), "{err:?}");
        let pushed = seq - 1;
        assert!(
            fs::write(mount.0.join("probe"), [0; 4096]).is_err(),
            "the disk is too full even for a new cursor"
        );
        drop(spool);

        // The operator follows the advice and lowers spool_max_bytes.
        let mut spool = Spool::open_with_segment_bytes(&dir, 24 << 10, segment).unwrap();
        spool.push(&big_report(seq)).unwrap();
        assert!(spool.bytes() <= 24 << 10);
        assert!(spool.dropped() > 0);
        assert_eq!(
            spool.dropped() + spool.len() as u64,
            pushed + 1,
            "every report kept or counted"
        );
        let kept = all(&spool);
        assert_eq!(
            kept,
            (seq + 1 - kept.len() as u64..=seq).collect::<Vec<_>>(),
            "the newest are kept"
        );
        let dropped = spool.dropped();
        drop(spool);

        let spool = Spool::open_with_segment_bytes(&dir, 24 << 10, segment).unwrap();
        assert_eq!(spool.dropped(), dropped, "the drop count was saved once there was room");
        assert_eq!(all(&spool), kept);
    }
}
