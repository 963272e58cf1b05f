//! `timecard-push`: run a push edge node, mint tokens, generate load.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use push::edge::EdgeConfig;
use push::processor::Processor;
use push::registry::Registry;
use push::token::{Claims, TokenKey};

/// Zuul Push-style edge: WebSocket/SSE connections, push registry, routing.
///
/// Devices connect to `ws://HOST/v1/ws?token=T` (or `/v1/sse`) with a token
/// from `timecard-push token`; publishers POST to `/v1/push` with a token of
/// device type `publisher`. Several nodes share a registry and route to
/// each other over NATS (`--registry nats://…`).
#[derive(Debug, Parser)]
#[command(name = "timecard-push", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address for device connections and the API.
    #[arg(long, default_value = "127.0.0.1:7390")]
    listen: SocketAddr,
    /// A second address serving the same API (e.g. a private one for
    /// publishers, or to reach one node of several sharing --reuse-port).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Let several processes listen on the same address (SO_REUSEPORT).
    #[arg(long)]
    reuse_port: bool,
    /// This node's id (in the registry and the `hello` frame); unique
    /// among the nodes sharing a registry. Default: edge-<host>-<port>.
    #[arg(long)]
    node_id: Option<String>,
    /// File with the token key (from `timecard-push keygen`).
    #[arg(long)]
    key_file: PathBuf,
    /// `embedded` (in this process) or NATS server URLs
    /// (`nats://127.0.0.1:4222[,nats://…]`) for a registry shared by
    /// several nodes and routing between them.
    #[arg(long, default_value = "embedded")]
    registry: String,
    /// Registry record lifetime without a refresh (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    registry_ttl: Duration,
    /// Heartbeat interval.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Maximum connection lifetime (each gets 75-100 % of it).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    max_lifetime: Duration,
    /// Frames buffered per connection before it is dropped as too slow.
    #[arg(long, default_value_t = 64)]
    send_buffer: usize,
    /// Most connections held (also bounded by the open-files limit).
    #[arg(long, default_value_t = 250_000)]
    max_connections: usize,
    /// Over how long a shutdown drain spreads its reconnect requests.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain_period: Duration,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// File with the token key.
    #[arg(long)]
    key_file: PathBuf,
    /// Member id.
    #[arg(long)]
    member: String,
    /// Device id.
    #[arg(long)]
    device: String,
    /// Device type (tv, phone, tablet, browser) or `publisher`.
    #[arg(long = "type", default_value = "tv")]
    device_type: String,
    /// A broadcast topic the device may subscribe to (repeat; at most 8).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Validity (e.g. 1h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// Edge address.
    #[arg(long, default_value = "127.0.0.1:7390")]
    target: SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 1_000)]
    connections: usize,
    /// First member number.
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Member name prefix.
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Loopback source addresses to spread over, round robin (default: by
    /// member number, one address per 25 000 members, so processes with
    /// different --first ranges use different addresses).
    #[arg(long)]
    sources: Option<usize>,
    /// File with the token key.
    #[arg(long)]
    key_file: PathBuf,
    /// Broadcast topic to subscribe every connection to.
    #[arg(long)]
    topic: Option<String>,
    /// Connection attempts in flight.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

/// Parses `250ms`, `30s`, `5m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
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

/// Raises the soft open-files limit to the hard one; returns it.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit; raising the soft limit to the hard
    // one needs no privilege.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    lim.rlim_cur
}

fn listener(addr: SocketAddr, reuse_port: bool) -> Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr}"))?;
    Ok(socket.listen(4096)?)
}

async fn serve(args: ServeArgs) -> Result<()> {
    let nofile = raise_nofile();
    let key = TokenKey::from_file(&args.key_file)?;
    let registry = if args.registry == "embedded" {
        Registry::embedded(args.registry_ttl)
    } else {
        let urls: Vec<String> = args.registry.split(',').map(str::to_owned).collect();
        let client = eventlog::nats::connect(&urls, Duration::from_secs(10))
            .await
            .map_err(anyhow::Error::msg)?;
        Registry::nats(
            &client,
            push::registry::DEFAULT_BUCKET,
            args.registry_ttl,
            1,
        )
        .await?
    };
    let max_connections = args
        .max_connections
        .min((nofile as usize).saturating_sub(64).max(1));
    let main = listener(args.listen, args.reuse_port)?;
    let main_addr = main.local_addr()?;
    let node_id = args
        .node_id
        .clone()
        .unwrap_or_else(|| push::edge::default_node_id("edge", main_addr.port()));
    let config = EdgeConfig {
        node_id,
        heartbeat: args.heartbeat,
        max_lifetime: args.max_lifetime,
        send_buffer: args.send_buffer,
        max_connections,
        drain_period: args.drain_period,
        ..EdgeConfig::default()
    };
    let processor = Processor::hosting(config, key, registry.clone()).await?;
    let node = processor
        .local()
        .cloned()
        .context("the processor hosts a node")?;
    let write_timeout = node.config().write_timeout;
    let app = push::http::router(processor);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    let mut admin_addr = None;
    if let Some(a) = args.admin_listen {
        let admin = listener(a, false)?;
        admin_addr = Some(admin.local_addr()?);
        servers.push(spawn_server(
            push::net::TimeoutListener::new(admin, write_timeout),
            app.clone(),
            stop_rx.clone(),
        ));
    }
    servers.push(spawn_server(
        push::net::TimeoutListener::new(main, write_timeout),
        app,
        stop_rx,
    ));
    println!(
        "edge {} listening {main_addr} admin {} registry {} max-connections {max_connections}",
        node.id(),
        admin_addr.map_or_else(|| main_addr.to_string(), |a| a.to_string()),
        registry.describe()
    );
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!(connections = node.connections(), "draining");
    node.drain().await;
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = tokio::time::timeout(Duration::from_secs(2), s).await;
    }
    Ok(())
}

fn spawn_server(
    listener: push::net::TimeoutListener,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("server: {e}");
        }
    })
}

async fn load(args: LoadArgs) -> Result<()> {
    let nofile = raise_nofile();
    if args.connections as u64 + 64 > nofile {
        bail!(
            "{} connections need more open files than this process may have ({nofile}); run several load processes",
            args.connections
        );
    }
    let stats = Arc::new(push::load::LoadStats::default());
    let config = push::load::LoadConfig {
        target: args.target,
        connections: args.connections,
        first: args.first,
        prefix: args.prefix,
        sources: args
            .sources
            .map(push::load::loopback_sources)
            .unwrap_or_default(),
        key: TokenKey::from_file(&args.key_file)?,
        topic: args.topic,
        concurrency: args.concurrency,
    };
    tokio::spawn(push::load::open(config, stats.clone()));
    let (line_tx, mut lines) = tokio::sync::mpsc::channel::<String>(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            line = lines.recv() => match line.as_deref().map(str::trim) {
                None => return Ok(()),
                Some("reset") => {
                    stats.latency.reset();
                    stats.received.store(0, Ordering::Relaxed);
                }
                Some(_) => {}
            },
            _ = tick.tick() => {
                let l = &stats.latency;
                println!(
                    "{}",
                    serde_json::json!({
                        "connected": stats.connected.load(Ordering::Relaxed),
                        "failed": stats.failed.load(Ordering::Relaxed),
                        "closed": stats.closed.load(Ordering::Relaxed),
                        "received": stats.received.load(Ordering::Relaxed),
                        "p50_us": l.quantile(0.5), "p99_us": l.quantile(0.99), "max_us": l.max(),
                        "rss_bytes": push::rss_bytes(),
                    })
                );
            }
        }
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,timecard_push=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
    };
    match cli.command {
        Command::Serve(a) => runtime()?.block_on(serve(a)),
        Command::Load(a) => runtime()?.block_on(load(a)),
        Command::Keygen => {
            println!("{}", TokenKey::generate()?.to_hex());
            Ok(())
        }
        Command::Token(a) => {
            let key = TokenKey::from_file(&a.key_file)?;
            let token = key.issue(&Claims {
                member: a.member,
                device: a.device,
                device_type: a.device_type,
                topics: a.topics,
                expires_unix_s: push::token::unix_now_s() + a.ttl.as_secs(),
            })?;
            println!("{token}");
            Ok(())
        }
    }
}
