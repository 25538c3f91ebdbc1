//! The tracing subscriber: structured lines on stderr, filtered by `RUST_LOG` (default
//! `info`), every line passed through the secret registry before it is written.
//!
//! Third-party crates (the AWS SDK, hyper, rustls) are capped at `debug` whenever
//! `RUST_LOG=trace`: at trace they log raw HTTP bodies, and an SSM response body carries
//! decrypted SecureStrings before moninit has seen (and registered) them. Set
//! `MONINIT_LOG_UNCAPPED=1` to lift the cap when debugging the SDK itself.

use std::fmt::Write as _;
use std::io::Write;

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

const CAPPED: [&str; 7] = [
    "aws_smithy_runtime",
    "aws_smithy_http_client",
    "aws_sigv4",
    "aws_config",
    "hyper",
    "h2",
    "rustls",
];

/// Installs the global subscriber (`verbose`: default level debug instead of info). Safe to
/// call more than once (later calls do nothing).
pub fn init(verbose: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A filter of its own, after RUST_LOG's: no directive, however specific its target
    // (`aws_sigv4::http_request=trace`), can lift the cap.
    let uncapped = std::env::var_os("MONINIT_LOG_UNCAPPED").is_some();
    let cap = tracing_subscriber::filter::filter_fn(move |meta| {
        uncapped || *meta.level() != tracing::Level::TRACE || !capped(meta.target())
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(cap)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(MaskingWriter)
                .with_ansi(false)
                .event_format(FieldsFirst),
        )
        .try_init();
}

/// Whether `target` is one of the capped crates or a module of one.
fn capped(target: &str) -> bool {
    CAPPED.iter().any(|crate_name| {
        target
            .strip_prefix(crate_name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// One line per event: time, level, target, the structured fields, then the sentence
/// (`… INFO moninit::supervise: child="prometheus" ready_ms=34 ready`), so lines about one
/// child or source line up and grep by field.
struct FieldsFirst;

impl<S, N> FormatEvent<S, N> for FieldsFirst
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        SystemTime.format_time(&mut writer)?;
        write!(writer, " {:>5} {}: ", meta.level(), meta.target())?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        writeln!(writer, "{}{}", fields.fields, fields.message)
    }
}

#[derive(Default)]
struct Fields {
    fields: String,
    message: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, "{}={value:?} ", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, "{}={value:?} ", field.name());
        }
    }
}

/// Writes to stderr, masking registered secrets in each formatted event.
#[derive(Clone, Copy)]
struct MaskingWriter;

struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let masked = crate::secret::mask(&text);
        let _ = std::io::stderr().lock().write_all(masked.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for MaskingWriter {
    type Writer = Line;
    fn make_writer(&'a self) -> Self::Writer {
        Line(Vec::new())
    }
}
