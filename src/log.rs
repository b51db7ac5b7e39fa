//! Logging: every log line goes through `tracing`, to stderr, filtered by
//! `RUST_LOG` (default `info`), as text or as one JSON object per line
//! (`log.format`). librdkafka's lines arrive here through [`crate::kafka`].

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `log.format`: how log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`).
    Json,
}

/// Installs the process's log subscriber (once; later calls do nothing).
/// `RUST_LOG` filters it, e.g. `RUST_LOG=recur=debug,rdkafka=warn`.
pub fn init(format: Format) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);

    let _ = match format {
        Format::Text => builder.event_format(Text).try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The text format: `recur: message key=value …`, with `warning:` or
/// `error:` after the prefix above info, and `[target]` for lines from
/// outside recur (librdkafka's are `[rdkafka]`).
struct Text;

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        write!(writer, "recur: ")?;
        match *meta.level() {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            Level::DEBUG => write!(writer, "debug: ")?,
            Level::TRACE => write!(writer, "trace: ")?,
            Level::INFO => {}
        }
        if !meta.target().starts_with("recur") {
            write!(writer, "[{}] ", meta.target())?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Lets a repeated message through the first `FIRST` times, then only at
/// powers of two, per key: a broker that stays down logs a few lines, not one
/// per retry. The count says how many occurred.
#[derive(Debug, Default)]
pub struct RateLimit {
    counts: Mutex<HashMap<String, u64>>,
}

/// Occurrences of a key that are always logged.
const FIRST: u64 = 5;

impl RateLimit {
    /// Counts one occurrence of `key`; `Some(count)` when it should be logged.
    pub fn hit(&self, key: &str) -> Option<u64> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = match counts.get_mut(key) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                // Bounded: keys are error kinds, but never let them grow without end.
                if counts.len() >= 1024 {
                    counts.clear();
                }
                counts.insert(key.to_owned(), 1);
                1
            }
        };
        (n <= FIRST || n.is_power_of_two()).then_some(n)
    }
}

/// A counter of one kind of repeated error, for call sites that own it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Repeats(u64);

impl Repeats {
    /// Counts one; `Some(count)` when it should be logged.
    pub fn hit(&mut self) -> Option<u64> {
        self.0 += 1;
        (self.0 <= FIRST || self.0.is_power_of_two()).then_some(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_messages_thin_out_to_powers_of_two() {
        let limit = RateLimit::default();
        let logged: Vec<u64> = (0..100).filter_map(|_| limit.hit("down")).collect();
        assert_eq!(logged, vec![1, 2, 3, 4, 5, 8, 16, 32, 64]);
        assert_eq!(limit.hit("other"), Some(1), "keys count separately");
        let mut r = Repeats::default();
        let logged: Vec<u64> = (0..20).filter_map(|_| r.hit()).collect();
        assert_eq!(logged, vec![1, 2, 3, 4, 5, 8, 16]);
    }
}
