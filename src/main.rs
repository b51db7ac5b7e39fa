//! The `recur` binary: allocator, argument parsing, logging, dispatch.
//! Everything else is in `cli/` (arguments and glue) and the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc serves Rust and C (librdkafka) allocations alike; see Cargo.toml.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (the `MALLOC_CONF` environment variable overrides
/// them): a background thread hands freed pages back to the system within
/// about a second, so memory falls again after evictions (`recur bench idle`:
/// final RSS 146 MiB rather than 576 MiB with the default ten seconds).
#[cfg(target_os = "linux")]
#[allow(non_upper_case_globals)]
#[unsafe(no_mangle)]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    recur::log::init(cli.log_format());
    match cli.dispatch() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The one line a failed command prints: user-facing, not a log line.
            eprintln!("recur: {e:#}");
            ExitCode::FAILURE
        }
    }
}
