//! The tracing subscriber: structured lines on stderr, filtered by `RUST_LOG` (default
//! `info`), every line passed through the secret registry before it is written.
//!
//! Third-party crates (the AWS SDK, hyper, rustls) are capped at `debug` whenever
//! `RUST_LOG=trace`: at trace they log raw HTTP bodies, and an SSM response body carries
//! decrypted SecureStrings before moninit has seen (and registered) them. Set
//! `MONINIT_LOG_UNCAPPED=1` to lift the cap when debugging the SDK itself.

use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;
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
    let default = if verbose { "debug" } else { "info" };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let wants_trace = filter.max_level_hint() == Some(tracing::level_filters::LevelFilter::TRACE);
    if wants_trace && std::env::var_os("MONINIT_LOG_UNCAPPED").is_none() {
        for target in CAPPED {
            if let Ok(directive) = format!("{target}=debug").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MaskingWriter)
        .with_ansi(false)
        .with_target(true)
        .try_init();
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
