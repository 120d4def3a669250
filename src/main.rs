//! The `quotask` binary: parses the command line and dispatches (`cli`).

use std::process::ExitCode;

use clap::Parser as _;
use quotask::cli::{Cli, Command};
use quotask::config::LogFormat;
use tracing_subscriber::EnvFilter;

// Allocation was a fifth of a request's CPU with glibc's malloc (docs/adr, "mimalloc").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.config.log_format);
    let settings = match cli.config.validate() {
        Ok(settings) => settings,
        Err(line) => {
            eprintln!("quotask: {line}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quotask: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(quotask::cli::run(cli.command.unwrap_or(Command::Serve), settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quotask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The redis crate's cluster client logs each failed reconnect, several a second while
    // a node is down; `redis_link` logs an outage once. Shown only if RUST_LOG asks.
    if !std::env::var("RUST_LOG").is_ok_and(|directives| directives.contains("redis=")) {
        filter = filter.add_directive("redis=off".parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
