//! Log set-up: human-readable lines on stderr, level from `ARCHIPEL_LOG` (or `RUST_LOG`),
//! `info` by default. Standard output stays for what a command prints on purpose. Both carry
//! the same time stamp ([`stamp`]), so the journal and a terminal read alike.

use archipel_gateway::escape::escape;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{self, Writer};
use tracing_subscriber::fmt::time::FormatTime;

/// What `--help` says about logging and what the terminal shows.
pub const HELP: &str = "\
Output:
  Standard output carries what an operator acts on: the configuration in force at start, one
  line per relayed, held, dropped or expired message, a summary every 60 s (every 30 s in the
  demo) with each endpoint's state and queue, and a last summary and `stopped` on shutdown.
  Standard error carries the logs. Both stamp lines with UTC time (2026-12-02T19:58:03Z).

Environment:
  ARCHIPEL_LOG   log filter for standard error: error, warn, info (default), debug, trace,
                 or per module (ARCHIPEL_LOG=info,archipel_adapters::radio=debug); RUST_LOG
                 is read when ARCHIPEL_LOG is not set.
  ARCHIPEL_*     configuration overrides for `run`: ARCHIPEL_STORE__PATH=/var/lib/archipel/db
                 sets [store] path (double underscore between section and key).";

/// The one time format of stdout and logs: UTC to the second, RFC 3339.
pub fn stamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// [`stamp`] for the log formatter.
struct Stamp;

impl FormatTime for Stamp {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        w.write_str(&stamp())
    }
}

/// How a log line writes its fields: `name=value`, the message bare, every one
/// [escaped](escape). Logs quote what meshes and XMPP servers say (node names, nicks, texts,
/// their errors), and one event must stay one line however they are made. (tracing's own
/// formatter escapes ESC but not a newline nor a bidirectional override.)
fn fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    format::debug_fn(|w, field, value| {
        let shown = format!("{value:?}");
        match field.name() {
            "message" => write!(w, "{}", escape(&shown)),
            name => write!(
                w,
                "{}={}",
                name.strip_prefix("r#").unwrap_or(name),
                escape(&shown)
            ),
        }
    })
    .delimited(" ")
}

/// Installs the global subscriber, its fields written by [`fields`].
pub fn init() {
    let filter = std::env::var("ARCHIPEL_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .fmt_fields(fields())
        .with_env_filter(filter)
        .with_timer(Stamp)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What the log formatter writes, kept for the test.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_field_or_message_quoting_a_mesh_stays_one_line_without_terminal_escapes() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(fields())
            .with_writer(move || out.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .finish();
        let name = "Evil\x1b[2J\nINFO relayed \u{202e}";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(node = %name, nick = name, "heard {name}");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(
            !text.contains('\x1b') && !text.contains('\u{202e}'),
            "{text:?}"
        );
        assert!(
            text.contains(r"heard Evil\x1b[2J\nINFO relayed \u{202e}")
                && text.contains(r"node=Evil\x1b[2J\nINFO")
                && text.contains(r#"nick="Evil\u{1b}[2J\nINFO"#),
            "{text}"
        );
    }
}
