//! `timecard-notify`: the notification pipeline and its client commands
//! (the same as `timecard notify …`).

use clap::Parser;

/// RENO-style rapid event notification: priority queues, gates, hybrid
/// push/pull, event-sourced member state, bulkheaded APNs/FCM/edge delivery.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: notify::cli::Command,
    // --log-level (default warn) and --log-format.
    #[command(flatten)]
    log: operate::logging::LogArgs,
}

fn main() -> anyhow::Result<()> {
    let cli: Cli = operate::config::parse();
    cli.log.init("warn")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(notify::cli::run(cli.command))
}
