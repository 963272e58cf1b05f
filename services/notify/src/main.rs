//! `timecard-notify`: the notification pipeline and its client commands
//! (the same as `timecard notify …`).

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// RENO-style rapid event notification: priority queues, gates, hybrid
/// push/pull, event-sourced member state, bulkheaded APNs/FCM/edge delivery.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: notify::cli::Command,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(notify::cli::run(cli.command))
}
