//! `timecard-counter`: the distributed counter service and its client
//! commands (the same as `timecard counter …`).

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Distributed counter: best-effort (memcached), eventually consistent and
/// accurate (event log + TrueTime rollups); gRPC and HTTP/JSON.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: counter::cli::Command,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match counter::cli::run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
