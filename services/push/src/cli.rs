//! The `timecard-push` command line: `serve` runs an edge node, `keygen`
//! and `token` mint keys and tokens, `load` opens many connections. Public so
//! that `timecard config check` can validate a `serve` config file against
//! the same flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Zuul Push-style edge: WebSocket/SSE connections, push registry, routing.
///
/// Devices connect to `ws://HOST/v1/ws?token=T` (or `/v1/sse`) with a token
/// from `timecard-push token`; publishers POST to `/v1/push` with a token of
/// device type `publisher`. Several nodes share a registry and route to
/// each other over NATS (`--registry nats://…`).
#[derive(Debug, Parser)]
#[command(name = "timecard-push", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// `--log-level` (default `warn,timecard_push=info`) and `--log-format`.
    #[command(flatten)]
    pub log: operate::logging::LogArgs,
}

/// `timecard-push` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an edge node until SIGINT/SIGTERM (then drain).
    Serve(ServeArgs),
    /// Print a new random token key (64 hex digits) for `--key-file`.
    Keygen,
    /// Print a signed token for a device (or a publisher).
    Token(TokenArgs),
    /// Open many connections to an edge node and report what they receive.
    ///
    /// Prints one JSON line per second (connected, failed, received,
    /// latency quantiles in µs); the line `reset` on stdin clears the
    /// latency histogram. Runs until stdin closes.
    Load(LoadArgs),
}

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// `--config FILE`: these flags from a TOML file.
    #[command(flatten)]
    pub config_file: operate::config::ConfigFile,
    /// Address for device connections and the API.
    #[arg(long, default_value = "127.0.0.1:7390")]
    pub listen: SocketAddr,
    /// A second address serving the same API (e.g. a private one for
    /// publishers, or to reach one node of several sharing --reuse-port).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Let several processes listen on the same address (SO_REUSEPORT).
    #[arg(long)]
    pub reuse_port: bool,
    /// This node's id (in the registry and the `hello` frame); unique
    /// among the nodes sharing a registry: a node whose id a live node
    /// holds refuses to start. Default: edge-<host>-<port>
    /// (edge-<host>-<port>-<pid> with --reuse-port).
    #[arg(long)]
    pub node_id: Option<String>,
    /// File with the token key (from `timecard-push keygen`).
    #[arg(long)]
    pub key_file: PathBuf,
    /// `embedded` (in this process) or NATS server URLs
    /// (`nats://127.0.0.1:4222[,nats://…]`) for a registry shared by
    /// several nodes and routing between them.
    #[arg(long, default_value = "embedded")]
    pub registry: String,
    /// Registry record lifetime without a refresh (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub registry_ttl: Duration,
    /// Heartbeat interval.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Maximum connection lifetime (each gets 75-100 % of it).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub max_lifetime: Duration,
    /// Frames buffered per connection before it is dropped as too slow.
    #[arg(long, default_value_t = 64)]
    pub send_buffer: usize,
    /// Most connections held (also bounded by the open-files limit).
    #[arg(long, default_value_t = 250_000)]
    pub max_connections: usize,
    /// Over how long a shutdown drain spreads its reconnect requests.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_period: Duration,
}

/// Arguments of `token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// File with the token key.
    #[arg(long)]
    pub key_file: PathBuf,
    /// Member id.
    #[arg(long)]
    pub member: String,
    /// Device id.
    #[arg(long)]
    pub device: String,
    /// Device type (tv, phone, tablet, browser) or `publisher`.
    #[arg(long = "type", default_value = "tv")]
    pub device_type: String,
    /// A broadcast topic the device may subscribe to (repeat; at most 8).
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Validity (e.g. 1h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// Arguments of `load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Edge address.
    #[arg(long, default_value = "127.0.0.1:7390")]
    pub target: SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// First member number.
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    /// Member name prefix.
    #[arg(long, default_value = "load")]
    pub prefix: String,
    /// Loopback source addresses to spread over, round robin (default: by
    /// member number, one address per 25 000 members, so processes with
    /// different --first ranges use different addresses).
    #[arg(long)]
    pub sources: Option<usize>,
    /// File with the token key.
    #[arg(long)]
    pub key_file: PathBuf,
    /// Broadcast topic to subscribe every connection to.
    #[arg(long)]
    pub topic: Option<String>,
    /// Connection attempts in flight.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

/// Parses `250ms`, `30s`, `5m`, `1h`.
///
/// # Errors
/// A message naming the value when it is not a number and one of those units.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (ms, s, m, h)"))?;
    let secs = |per: u64| {
        n.checked_mul(per)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3_600),
        _ => Err(format!("{s:?}: unit must be ms, s, m or h")),
    }
}
