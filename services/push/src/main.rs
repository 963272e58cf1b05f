//! `timecard-push`: run a push edge node, mint tokens, generate load.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use push::cli::{Cli, Command, LoadArgs, ServeArgs};
use push::edge::EdgeConfig;
use push::processor::Processor;
use push::registry::Registry;
use push::token::{Claims, TokenKey};

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
    let node_id = args.node_id.clone().unwrap_or_else(|| {
        let id = push::edge::default_node_id("edge", main_addr.port());
        // Several processes share the port: the process id tells them apart.
        if args.reuse_port {
            format!("{id}-{}", std::process::id())
        } else {
            id
        }
    });
    let config = EdgeConfig {
        node_id,
        heartbeat: args.heartbeat,
        max_lifetime: args.max_lifetime,
        send_buffer: args.send_buffer,
        max_connections,
        drain_period: args.drain_period,
        ..EdgeConfig::default()
    };
    // Every listener is bound before the node claims its id, so a bind
    // error cannot leave the id claimed behind this process.
    let admin = args.admin_listen.map(|a| listener(a, false)).transpose()?;
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
    if let Some(admin) = admin {
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
    if let Some(path) = &args.config_file.config {
        tracing::info!(config = %path.display(), "settings from the config file");
    }
    println!(
        "edge {} listening {main_addr} admin {} registry {} max-connections {max_connections}",
        node.id(),
        admin_addr.map_or_else(|| main_addr.to_string(), |a| a.to_string()),
        registry.describe()
    );
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let lost = tokio::select! {
        _ = tokio::signal::ctrl_c() => false,
        _ = term.recv() => false,
        () = node.claim_lost() => true,
    };
    tracing::info!(connections = node.connections(), "draining");
    node.drain().await;
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = tokio::time::timeout(Duration::from_secs(2), s).await;
    }
    if lost {
        bail!(
            "node id {} was taken over by another node while this one could not renew it; stopped",
            node.id()
        );
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
    let cli: Cli = operate::config::parse();
    cli.log.init("warn,timecard_push=info")?;
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
