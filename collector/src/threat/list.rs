//! One threat list: its `[[threat.list]]` entry, its file read and parsed,
//! and the prefix trie its lookups go through.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ipnet::IpNet;
use portwatch_model::Severity;
use prefix_trie::joint::JointPrefixMap;
use serde::Deserialize;

use super::parse::{self, BadLine, Format, Parsed};

/// A list of suspicious addresses from the config (`[[threat.list]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSpec {
    /// A unique name (letters, digits, `-`, `_`, `.`; at most 64): what a
    /// match is reported under, and its label in `/metrics`.
    pub name: String,
    /// The list's file, on this machine (kept current by whatever downloads
    /// it: replace it by renaming a complete file into place).
    pub path: PathBuf,
    /// How the file is written: `netset` (FireHOL), `spamhaus-drop`
    /// (`drop.txt`), `spamhaus-json` (`drop_v4.json`, `drop_v6.json`) or
    /// `cidr` (a plain list).
    pub format: Format,
    /// How serious a match is: `info`, `warning` or `critical`.
    pub severity: Severity,
}

impl ListSpec {
    /// Whether the entry is usable (the file is read at start, not here).
    pub fn check(&self) -> Result<(), String> {
        if !portwatch_model::baseline::valid_name(&self.name) {
            return Err(format!(
                "name {:?}: use 1 to 64 letters, digits, '-', '_' and '.'",
                self.name
            ));
        }
        if self.path.as_os_str().is_empty() {
            return Err(format!("list {:?}: path is empty: name the list's file", self.name));
        }
        Ok(())
    }
}

/// Why a list could not be loaded (at start: the collector does not start;
/// on a reload: the previous list is kept).
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The file cannot be opened or read.
    #[error(
        "threat list {name:?}: cannot read {}: {source} (fix its path in [[threat.list]], or the file's permissions)",
        path.display()
    )]
    Read {
        /// The list's name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has lines, and not one of them is an entry: not this
    /// format, or not a list at all (an error page saved in its place).
    #[error(
        "threat list {name:?}: no line of {} is an entry of a {format} list ({bad_lines} bad; the first, {first}): \
         is it the right file, and in that format?",
        path.display()
    )]
    Unusable {
        /// The list's name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// The format it was read as.
        format: &'static str,
        /// How many lines were bad.
        bad_lines: usize,
        /// The first of them.
        first: BadLine,
    },
}

/// Which file was read: a change of any of these is a new file to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    /// The stamp of the file at `path` now.
    pub fn of(path: &Path) -> std::io::Result<Stamp> {
        Ok(Stamp::from_metadata(&std::fs::metadata(path)?))
    }

    fn from_metadata(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// A loaded list.
pub struct List {
    /// Its name.
    pub name: String,
    /// How serious a match is.
    pub severity: Severity,
    /// Its file.
    pub path: PathBuf,
    /// How many lines of its file were bad.
    pub bad_lines: usize,
    /// The first of them (at most [`parse::MAX_BAD_LINES_KEPT`]).
    pub bad: Vec<BadLine>,
    /// Each network, with the list's id of it.
    trie: JointPrefixMap<IpNet, Option<Box<str>>>,
}

impl std::fmt::Debug for List {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("List")
            .field("name", &self.name)
            .field("entries", &self.entries())
            .field("bad_lines", &self.bad_lines)
            .finish()
    }
}

impl List {
    /// The list `spec` names, made of `parsed` (a repeated network is one
    /// entry, with the id of its last line).
    pub fn build(spec: &ListSpec, parsed: Parsed) -> List {
        let mut trie = JointPrefixMap::new();
        for entry in parsed.entries {
            trie.insert(entry.net, entry.id);
        }
        List {
            name: spec.name.clone(),
            severity: spec.severity,
            path: spec.path.clone(),
            bad_lines: parsed.bad_lines,
            bad: parsed.bad,
            trie,
        }
    }

    /// The list `spec` names, made of its file's `text`; an error when the
    /// text has lines and no entry at all. An empty text is an empty list.
    pub fn from_text(spec: &ListSpec, text: &str) -> Result<List, ListError> {
        let parsed = parse::parse(spec.format, text);
        if parsed.entries.is_empty() {
            if let Some(first) = parsed.bad.first() {
                return Err(ListError::Unusable {
                    name: spec.name.clone(),
                    path: spec.path.clone(),
                    format: spec.format.as_str(),
                    bad_lines: parsed.bad_lines,
                    first: first.clone(),
                });
            }
        }
        Ok(List::build(spec, parsed))
    }

    /// Reads and parses the file `spec` names; with the stamp of the file read.
    pub fn read(spec: &ListSpec) -> Result<(List, Stamp), ListError> {
        use std::io::Read;
        let failed = |source| ListError::Read {
            name: spec.name.clone(),
            path: spec.path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&spec.path).map_err(failed)?;
        let stamp = Stamp::from_metadata(&file.metadata().map_err(failed)?);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(failed)?;
        // A byte that is not UTF-8 makes its line bad, not the whole file.
        let text = String::from_utf8_lossy(&bytes);
        Ok((List::from_text(spec, &text)?, stamp))
    }

    /// How many networks it holds.
    pub fn entries(&self) -> usize {
        self.trie.len()
    }

    /// Bytes its trie takes (without the ids' text).
    pub fn trie_bytes(&self) -> usize {
        self.trie.t1.mem_size() + self.trie.t2.mem_size()
    }

    /// The longest of its networks that holds `addr` (an address as
    /// [`parse::canonical`] makes it), with the list's id of it.
    pub fn lookup(&self, addr: IpAddr) -> Option<(IpNet, Option<&str>)> {
        self.trie
            .get_lpm(&parse::host(addr))
            .map(|(net, id)| (net, id.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(format: Format) -> ListSpec {
        ListSpec {
            name: "test".to_owned(),
            path: PathBuf::from("/nonexistent/test.list"),
            format,
            severity: Severity::Warning,
        }
    }

    #[test]
    fn the_longest_network_of_a_list_answers_with_its_id() {
        let text = "10.0.0.0/8 ; SBL1\n10.1.0.0/16 ; SBL2\n10.1.2.0/24 ; SBL3\n2001:db8::/32 ; SBL6\n";
        let list = List::from_text(&spec(Format::SpamhausDrop), text).unwrap();
        assert_eq!(list.entries(), 4);
        assert!(list.trie_bytes() > 0);
        let at = |a: &str| {
            list.lookup(a.parse().unwrap())
                .map(|(n, id)| (n.to_string(), id.map(str::to_owned)))
        };
        assert_eq!(at("10.1.2.3"), Some(("10.1.2.0/24".into(), Some("SBL3".into()))));
        assert_eq!(at("10.1.3.3"), Some(("10.1.0.0/16".into(), Some("SBL2".into()))));
        assert_eq!(at("10.200.0.1"), Some(("10.0.0.0/8".into(), Some("SBL1".into()))));
        assert_eq!(at("11.0.0.1"), None);
        assert_eq!(at("2001:db8:1::1"), Some(("2001:db8::/32".into(), Some("SBL6".into()))));
        assert_eq!(at("2001:db9::1"), None);
    }

    #[test]
    fn a_file_of_only_bad_lines_is_refused_and_an_empty_one_is_an_empty_list() {
        let e = List::from_text(&spec(Format::Netset), "<html>\n<body>503</body>\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("\"test\"") && text.contains("2 bad;") && text.contains("line 1") && text.contains("netset"),
            "{text}"
        );
        assert_eq!(List::from_text(&spec(Format::Netset), "").unwrap().entries(), 0);
        assert_eq!(
            List::from_text(&spec(Format::Netset), "# only comments\n")
                .unwrap()
                .entries(),
            0
        );
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it_and_what_to_fix() {
        let e = List::read(&spec(Format::Netset)).unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/test.list") && e.contains("[[threat.list]]") && e.contains("\"test\""),
            "{e}"
        );
    }

    #[test]
    fn a_list_name_must_be_a_bounded_label() {
        let mut s = spec(Format::Cidr);
        assert_eq!(s.check(), Ok(()));
        s.name = "my list".to_owned();
        assert!(s.check().unwrap_err().contains("\"my list\""));
        s.name = "x".repeat(65);
        assert!(s.check().is_err());
        s.name = "ok".to_owned();
        s.path = PathBuf::new();
        assert!(s.check().unwrap_err().contains("path is empty"));
    }
}
