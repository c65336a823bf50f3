//! Untrusted text: escaping for terminals and logs, guarding for spreadsheets.
//!
//! What agents report about their host (process names, command lines,
//! executables, systemd units, container ids, user names, OS and kernel,
//! tags) is chosen by whoever runs there: any local user can name a process
//! anything (`prctl(PR_SET_NAME)`, `argv`), and a compromised host can send
//! any string at all. Such text is shown as it is, only made inert:
//!
//! - **Terminals and logs** ([`escape`], [`Escaped`], [`Escaping`]): a
//!   character that a terminal or a line-oriented log would act on instead of
//!   showing is written as a visible escape. Those are the C0 controls
//!   (`\n`, `\r`, `\t`; any other as `\x1b`, `\x07`, ...), DEL (`\x7f`), the
//!   C1 controls U+0080 to U+009F (`\u{9b}`: some terminals take them as
//!   CSI, OSC, ...), the line and paragraph separators U+2028 and U+2029
//!   (`\u{2028}`: some viewers break lines there), and the Unicode bidi
//!   controls U+061C, U+200E, U+200F, U+202A to U+202E and U+2066 to U+2069
//!   (`\u{202e}`: they reorder what a terminal shows, so `evil\u{202e}txt.sh`
//!   would read as another name). Everything else, spaces and any other
//!   UTF-8 included, is left as it is. So an OSC 52 clipboard write
//!   (`ESC ] 52 ; c ; ... BEL`) prints as `\x1b]52;c;...\x07`, and a name
//!   with a newline cannot forge a second log line or table row. A
//!   backslash is not escaped: the escapes are for a person to read, not to
//!   be decoded, and the exact value is in the JSON output.
//! - **CSV** ([`csv_cell`]): a cell a spreadsheet would run as a formula gets
//!   a leading `'` (the OWASP advice on CSV injection).
//! - **Size** ([`truncate`]): where a bounded message carries reported text
//!   (an alert's message, a syslog datagram), the text is cut on a character
//!   boundary and ends in a marker that says how much was cut
//!   (`…[+299872 bytes]`), so that a cut is never mistaken for the whole.
//!
//! JSON is left as data: serde_json escapes the C0 controls, and C1 and bidi
//! characters are valid JSON string content that a program reading it gets
//! back exactly.

use std::borrow::Cow;
use std::fmt::{self, Write};

/// Whether `c` is written as an escape (see the [module docs](self)).
pub fn needs_escape(c: char) -> bool {
    c.is_control() // C0, DEL, C1
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{061c}' | '\u{200e}' | '\u{200f}' // bidi marks
            | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}' // bidi isolates
        )
}

/// `text` as a terminal or a log may show it: borrowed when nothing needs
/// an escape, which is the common case.
pub fn escape(text: &str) -> Cow<'_, str> {
    if text.chars().any(needs_escape) {
        Cow::Owned(Escaped(text).to_string())
    } else {
        Cow::Borrowed(text)
    }
}

/// Displays its text escaped, without a copy: `format!("{}", Escaped(name))`.
/// Width and alignment flags are not applied.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaping(f).write_str(self.0)
    }
}

/// A [`fmt::Write`] that escapes whatever is written through it: for
/// formatting a value whose text is not known in advance (a log field).
#[derive(Debug)]
pub struct Escaping<W>(pub W);

impl<W: Write> Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
            self.0.write_str(&rest[..at])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if c < ' ' || c == '\x7f' => write!(self.0, "\\x{:02x}", u32::from(c))?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// A CSV cell that a spreadsheet shows instead of running: one that begins
/// with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`,
/// unless it is a plain number (`-12`, `+3.5`), which no spreadsheet takes
/// for a formula. Every other cell is left as it is.
///
/// Every cell of portwatch's CSV output goes through this, whatever its
/// column: the text columns carry reported strings, and the others (ports,
/// pids, addresses, times) never begin so. A program that reads the CSV as
/// data and meets a `'` followed by one of those characters strips the `'`;
/// the JSON output needs no such care.
pub fn csv_cell(cell: &str) -> Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') if !is_plain_number(cell) => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

/// `text` in at most `max` bytes: as it is (borrowed) when it fits, else cut
/// on a character boundary and ended by a marker saying how many bytes were
/// cut, `…[+N bytes]`, the marker counted in `max`. When `max` is too small
/// for that marker the cut ends in `…` alone, and below 3 bytes in nothing.
pub fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    // The marker at its longest: the count of cut bytes has at most as many
    // digits as the text's length.
    let longest = "…[+ bytes]".len() + text.len().to_string().len();
    let (budget, counted) = match max {
        m if m >= longest => (m - longest, true),
        m if m >= "…".len() => (m - "…".len(), false),
        m => (m, false),
    };
    let keep = floor_char_boundary(text, budget);
    let mut out = String::with_capacity(max);
    out.push_str(&text[..keep]);
    match (counted, max >= "…".len()) {
        (true, _) => {
            let _ = write!(out, "…[+{} bytes]", text.len() - keep);
        }
        (false, true) => out.push('…'),
        (false, false) => {}
    }
    Cow::Owned(out)
}

/// The largest character boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// An optional sign, digits, and optionally a point and more digits.
fn is_plain_number(cell: &str) -> bool {
    let unsigned = cell.strip_prefix(['+', '-']).unwrap_or(cell);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_tabs_are_written_as_their_escapes() {
        assert_eq!(escape("a\nb\rc\td"), "a\\nb\\rc\\td");
    }

    #[test]
    fn other_c0_controls_and_del_are_written_as_hex_escapes() {
        assert_eq!(escape("\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(
            escape("\x00\x07\x08\x0b\x0c\x1f\x7f"),
            "\\x00\\x07\\x08\\x0b\\x0c\\x1f\\x7f"
        );
    }

    #[test]
    fn c1_controls_are_escaped() {
        assert_eq!(
            escape("\u{80}x\u{85}\u{9b}31m\u{9d}\u{9f}"),
            "\\u{80}x\\u{85}\\u{9b}31m\\u{9d}\\u{9f}"
        );
        // The first character after C1: not a control, left alone.
        assert_eq!(escape("\u{a0}"), "\u{a0}");
    }

    #[test]
    fn bidi_controls_and_line_separators_are_escaped() {
        assert_eq!(escape("evil\u{202e}hs.txt"), "evil\\u{202e}hs.txt");
        for c in ('\u{202a}'..='\u{202e}').chain('\u{2066}'..='\u{2069}') {
            assert_eq!(escape(&c.to_string()), format!("\\u{{{:x}}}", u32::from(c)));
        }
        assert_eq!(escape("\u{061c}\u{200e}\u{200f}"), "\\u{61c}\\u{200e}\\u{200f}");
        assert_eq!(escape("a\u{2028}b\u{2029}"), "a\\u{2028}b\\u{2029}");
    }

    #[test]
    fn an_osc_52_clipboard_write_is_shown_not_run() {
        let hostile = "\x1b]52;c;ZXZpbA==\x07evil\r\nroot";
        let shown = escape(hostile);
        assert_eq!(shown, "\\x1b]52;c;ZXZpbA==\\x07evil\\r\\nroot");
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
    }

    #[test]
    fn ordinary_text_is_left_as_it_is_and_not_copied() {
        for text in [
            "nginx: worker process",
            "ünïcode",
            "  spaced  out  ",
            "日本語 ✓ 🦀",
            "emoji\u{200d}joiner",
            "C:\\not\\an\\escape",
            "",
        ] {
            assert!(matches!(escape(text), Cow::Borrowed(t) if t == text), "{text:?}");
        }
    }

    #[test]
    fn escaped_and_escaping_write_what_escape_returns() {
        let text = "a\x1b[2Jb\u{202e}c\u{2028}";
        assert_eq!(Escaped(text).to_string(), escape(text));
        let mut out = String::new();
        write!(Escaping(&mut out), "{}|{text}", 1).unwrap();
        assert_eq!(out, format!("1|{}", escape(text)));
    }

    #[test]
    fn text_that_fits_is_left_as_it_is_and_not_copied() {
        for (text, max) in [("nginx", 5), ("", 0), ("日本", 6), ("a", 100)] {
            assert!(matches!(truncate(text, max), Cow::Borrowed(t) if t == text), "{text:?}");
        }
    }

    #[test]
    fn a_cut_is_marked_with_how_much_was_cut_and_stays_within_the_bound() {
        let name = "x".repeat(300_000);
        let cut = truncate(&name, 64);
        assert_eq!(cut.len(), 64, "{cut}");
        assert_eq!(cut, format!("{}…[+299954 bytes]", "x".repeat(46)));
        assert_eq!(truncate("abcdefghijklmnopqrstuvwxyz", 20), "abcdef…[+20 bytes]");
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // 3-byte characters: a cut at any bound lands between two of them.
        let text = "日本語".repeat(100);
        for max in 0..80 {
            let cut = truncate(&text, max);
            assert!(cut.len() <= max, "{max}: {cut}");
            let kept = cut.split('…').next().unwrap();
            assert!(kept.chars().all(|c| "日本語".contains(c)), "{max}: {cut}");
        }
    }

    #[test]
    fn a_bound_too_small_for_the_count_ends_in_an_ellipsis_or_nothing() {
        assert_eq!(truncate("abcdefghij", 9), "abcdef…");
        assert_eq!(truncate("abcdefghij", 3), "…");
        assert_eq!(truncate("abcdefghij", 2), "ab");
        assert_eq!(truncate("日本語", 2), "");
    }

    #[test]
    fn a_csv_cell_that_would_run_as_a_formula_gets_a_leading_quote() {
        for (cell, guarded) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-bash", "'-bash"),
            ("@SUM(1+1)", "'@SUM(1+1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("-1+2", "'-1+2"),
            ("-", "'-"),
        ] {
            assert_eq!(csv_cell(cell), guarded, "{cell:?}");
        }
    }

    #[test]
    fn plain_numbers_and_other_cells_are_left_as_they_are() {
        for cell in [
            "8080",
            "-12",
            "+3",
            "-0.5",
            "0",
            "",
            "nginx",
            "::",
            "2026-11-24T03:00:00Z",
            " =1",
            "a=b",
        ] {
            assert!(matches!(csv_cell(cell), Cow::Borrowed(c) if c == cell), "{cell:?}");
        }
    }
}
