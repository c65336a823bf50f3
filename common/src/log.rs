//! The log of the agent and the collector daemons: tracing's text lines on
//! stderr, filtered by `PORTWATCH_LOG` (`info` by default), colored on a
//! terminal, and with every field escaped.
//!
//! Log lines carry what agents report (process names in alert messages, a
//! collector's refusal quoted by an agent, ...). tracing's default field
//! format writes a `%` field and the message as they are, so a process named
//! `x\n2026-... INFO forged` would write a line of its own, and one with
//! escape sequences would drive the terminal of whoever tails the log. Here
//! every field, the message included, is written through
//! [`text::Escaping`](crate::text::Escaping): a call site needs no care of
//! its own, whatever it logs and however (`%`, `?`, or in the message).

use std::fmt::{self, Write};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::EnvFilter;

use crate::text::Escaping;

/// The variable that sets what is logged (`debug`, `warn`, `portwatch_collector=debug`, ...).
pub const FILTER_VARIABLE: &str = "PORTWATCH_LOG";

/// What is logged when [`FILTER_VARIABLE`] is unset or does not parse.
pub const DEFAULT_FILTER: &str = "info";

/// Makes the log of this process: stderr, [`FILTER_VARIABLE`], colors
/// only if stderr is a terminal. Fails if a log was made already.
pub fn init() -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
    let filter = EnvFilter::try_from_env(FILTER_VARIABLE).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::stderr().is_terminal();
    tracing::subscriber::set_global_default(subscriber(filter, std::io::stderr, ansi))
}

/// The log [`init`] makes, writing to `writer` (tests write to a buffer).
pub fn subscriber<W>(filter: EnvFilter, writer: W, ansi: bool) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .fmt_fields(EscapedFields)
        .finish()
}

/// Fields as tracing writes them by default (`message name=value ...`,
/// names in italics on a terminal), with every value escaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    fn field(&mut self, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
        if !std::mem::replace(&mut self.first, false) {
            self.writer.write_char(' ')?;
        }
        let name = field.name();
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            match self.writer.has_ansi_escapes() {
                // Italic name, dimmed `=`, as tracing's own format has them.
                true => write!(self.writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")?,
                false => write!(self.writer, "{name}=")?,
            }
        }
        write!(Escaping(&mut self.writer), "{value:?}")
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // As tracing does: a message unquoted, any other text quoted.
        match field.name() {
            "message" => self.record_debug(field, &format_args!("{value}")),
            _ => self.record_debug(field, &value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self.field(field, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, PoisonError};

    use super::*;

    /// A log in memory.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `emit` logs, through [`subscriber`].
    fn logged(ansi: bool, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        tracing::subscriber::with_default(subscriber(EnvFilter::new("info"), move || writer.clone(), ansi), emit);
        let bytes = buffer.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
        String::from_utf8(bytes).unwrap()
    }

    const FORGED: &str = "sshd\n2026-11-24T03:00:00.000000Z  INFO portwatch_collector: root login accepted";

    #[test]
    fn a_newline_in_a_reported_string_cannot_forge_a_log_line() {
        let name = FORGED;
        let log = logged(false, || {
            tracing::warn!(process = %name, cmdline = ?name, unit = name, "alert opened: {name}");
        });
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(!log.lines().any(|l| l.starts_with("2026-11-24T03:00:00")), "{log}");
        assert!(
            log.contains("alert opened: sshd\\n2026-11-24T03:00:00.000000Z  INFO"),
            "{log}"
        );
        assert!(log.contains(" process=sshd\\n2026"), "{log}");
        // `?` and plain text are quoted with Rust's escapes, which pass through unchanged.
        assert!(log.contains(" cmdline=\"sshd\\n2026"), "{log}");
        assert!(log.contains(" unit=\"sshd\\n2026"), "{log}");
    }

    #[test]
    fn escape_sequences_in_a_reported_string_reach_the_log_as_text() {
        let name = "\x1b]52;c;ZXZpbA==\x07evil\r\u{9b}2J\u{202e}root";
        let log = logged(false, || tracing::error!(process = %name, "alert opened: {name}"));
        assert!(
            !log.trim_end_matches('\n').chars().any(crate::text::needs_escape),
            "{log:?}"
        );
        assert!(
            log.contains("alert opened: \\x1b]52;c;ZXZpbA==\\x07evil\\r\\u{9b}2J\\u{202e}root process=\\x1b]52"),
            "{log}"
        );
    }

    #[test]
    fn on_a_terminal_only_the_log_itself_writes_escape_sequences() {
        let log = logged(true, || tracing::warn!(process = %"\x1b[2J", "cleared?"));
        assert!(log.contains("\x1b[3mprocess\x1b[0m\x1b[2m=\x1b[0m\\x1b[2J"), "{log:?}");
        assert!(!log.contains("\x1b[2J"), "{log:?}");
    }
}
