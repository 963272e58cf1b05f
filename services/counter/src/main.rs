//! `timecard-counter`: the distributed counter service and its client
//! commands (the same as `timecard counter …`).

use clap::Parser;

/// Distributed counter: best-effort (memcached), eventually consistent and
/// accurate (event log + TrueTime rollups); gRPC and HTTP/JSON.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: counter::cli::Command,
    // --log-level (default warn) and --log-format.
    #[command(flatten)]
    log: operate::logging::LogArgs,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    let cli: Cli = operate::config::parse();
    if let Err(e) = cli.log.init("warn") {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    match counter::cli::run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
