//! The command line: `serve` runs the pipeline; `publish`, `pull`, `state`
//! and `register` talk to a running one over gRPC. The same arguments are
//! mounted under `timecard notify`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use eventlog::TimeSource;
use eventlog::args::ServiceArgs;
use eventlog::backend::Backend;
use outbound::{ApnsConfig, BulkheadConfig, FcmConfig};
use push::edge::EdgeConfig;
use push::processor::Processor;
use push::registry::Registry;
use push::token::TokenKey;
use replay::capture::ReplaySupport;

use crate::model::TypeSpec;
use crate::pb::notify_client::NotifyClient;
use crate::service::{NotifyConfig, NotifyService, Providers};

/// Default gRPC address.
pub const DEFAULT_GRPC: &str = "127.0.0.1:7350";
/// Default HTTP address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7351";

/// `notify` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the notification pipeline (gRPC + HTTP/JSON).
    Serve(Box<ServeArgs>),
    /// Publish one event.
    Publish {
        /// Notification type (e.g. new-episode).
        #[arg(long = "type")]
        kind: String,
        /// Member id.
        #[arg(long)]
        member: String,
        /// high, medium or low (default: the type's).
        #[arg(long)]
        priority: Option<String>,
        /// Device type to target (repeat; default: all).
        #[arg(long = "target")]
        targets: Vec<String>,
        /// JSON object body.
        #[arg(long, default_value = "{}")]
        body: String,
        /// Idempotency key CREATION_TIME_NS:NONCE (retries deliver once).
        #[arg(long)]
        key: Option<String>,
        /// Server.
        #[arg(long, default_value = DEFAULT_GRPC)]
        server: SocketAddr,
        /// API token.
        #[command(flatten)]
        auth: access::ClientArgs,
    },
    /// Pull a member's changes since a cursor.
    Pull {
        /// Member id.
        member: String,
        /// Cursor from the previous pull.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Only what a device of this type sees.
        #[arg(long)]
        device_type: Option<String>,
        /// Server.
        #[arg(long, default_value = DEFAULT_GRPC)]
        server: SocketAddr,
    },
    /// A member's notification state as of a TAI time (default: now).
    State {
        /// Member id.
        member: String,
        /// TAI nanoseconds.
        #[arg(long)]
        at_ns: Option<i64>,
        /// Server.
        #[arg(long, default_value = DEFAULT_GRPC)]
        server: SocketAddr,
    },
    /// Register (or heartbeat) a device.
    Register {
        /// Member id.
        member: String,
        /// Device id.
        #[arg(value_name = "DEVICE")]
        device_id: String,
        /// tv, phone, tablet or browser.
        #[arg(long = "type")]
        device_type: String,
        /// apns or fcm (edge devices register by connecting to the push
        /// edge with a token).
        #[arg(long)]
        channel: String,
        /// Provider token (APNs device token / FCM registration token).
        #[arg(long)]
        token: Option<String>,
        /// Server.
        #[arg(long, default_value = DEFAULT_GRPC)]
        server: SocketAddr,
        /// API token.
        #[command(flatten)]
        auth: access::ClientArgs,
    },
}

/// Arguments of `serve` (also used by `timecard up`).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// `--config FILE`: these flags from a TOML file.
    #[command(flatten)]
    pub config_file: operate::config::ConfigFile,
    /// Backend and clock.
    #[command(flatten)]
    pub common: ServiceArgs,
    /// A notification type NAME=STALENESS_S[:PRIORITY]; repeat. Default:
    /// live-event=30:high viewing-activity=60:medium new-episode=600:medium
    /// my-list=300:low profile-update=300:low.
    #[arg(long = "type", value_name = "NAME=STALENESS_S[:PRIORITY]")]
    pub types: Vec<String>,
    /// Log shards per priority (fixed for a data directory; about one per
    /// core: more shards mean smaller group commits).
    #[arg(long, default_value_t = 2)]
    pub shards: u16,
    /// gRPC listen address (loopback unless you mean it).
    #[arg(long, default_value = DEFAULT_GRPC)]
    pub grpc: SocketAddr,
    /// HTTP/JSON listen address.
    #[arg(long, default_value = DEFAULT_HTTP)]
    pub http: SocketAddr,
    /// APNs endpoint (http:// h2c; put a TLS relay in front of Apple's).
    #[arg(long, value_name = "URL")]
    pub apns: Option<String>,
    /// APNs topic (the app's bundle id).
    #[arg(long, default_value = "com.example.timecard")]
    pub apns_topic: String,
    /// FCM endpoint (http://).
    #[arg(long, value_name = "URL")]
    pub fcm: Option<String>,
    /// FCM project id.
    #[arg(long, default_value = "timecard")]
    pub fcm_project: String,
    /// File holding the providers' bearer tokens, one `apns=…` / `fcm=…`
    /// per line (kept out of the command line and the logs).
    #[arg(long)]
    pub provider_tokens: Option<PathBuf>,
    /// Keys the de-duplication windows hold in all (about 40 bytes each).
    /// Exact de-duplication needs rate × largest staleness threshold keys;
    /// beyond that the oldest are evicted early and status says "degraded".
    #[arg(long, default_value_t = 4_000_000)]
    pub dedup_capacity: usize,
    /// Per-channel queue capacity.
    #[arg(long, default_value_t = 10_000)]
    pub channel_queue: usize,
    /// Per-channel concurrent requests.
    #[arg(long, default_value_t = 64)]
    pub channel_concurrency: usize,
    /// Per-request timeout of a channel, ms.
    #[arg(long, default_value_t = 5_000)]
    pub channel_timeout_ms: u64,
    /// Token key of the push edge (from `timecard-push keygen`; shared with
    /// the edge nodes). Default with the embedded backend: `push.key` in
    /// the data directory, created if missing. Mint device tokens with
    /// `timecard-push token --key-file FILE`.
    #[arg(long, value_name = "FILE")]
    pub push_key_file: Option<PathBuf>,
    /// Id of the edge node this process hosts (edge devices connect to
    /// /v1/ws or /v1/sse on the HTTP address); unique among the nodes
    /// sharing a registry. Default: notify-<host>-<HTTP port>.
    #[arg(long)]
    pub push_node: Option<String>,
    /// Capture for replay testing.
    #[command(flatten)]
    pub capture: replay::capture::CaptureArgs,
    /// Who may publish, mark and register: `--api-token-file` or `--insecure`.
    #[command(flatten)]
    pub access: access::AccessArgs,
}

/// Parses `ServeArgs` alone (for [`ServeArgs::defaults`]).
#[derive(clap::Parser)]
struct ServeOnly {
    #[command(flatten)]
    args: ServeArgs,
}

fn read_tokens(path: &std::path::Path) -> anyhow::Result<(Option<String>, Option<String>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading provider tokens from {}", path.display()))?;
    let (mut apns, mut fcm) = (None, None);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some(("apns", t)) => apns = Some(t.trim().to_owned()),
            Some(("fcm", t)) => fcm = Some(t.trim().to_owned()),
            _ => bail!(
                "{}:{}: expected apns=TOKEN or fcm=TOKEN",
                path.display(),
                i + 1
            ),
        }
    }
    Ok((apns, fcm))
}

impl ServeArgs {
    /// The defaults of `serve`, as its flags declare them.
    #[must_use]
    pub fn defaults() -> Self {
        <ServeOnly as clap::Parser>::parse_from(["serve"]).args
    }

    /// The pipeline configuration these arguments describe.
    pub fn config(&self) -> anyhow::Result<NotifyConfig> {
        self.common.check().map_err(anyhow::Error::msg)?;
        self.capture.check().map_err(anyhow::Error::msg)?;
        let mut config = NotifyConfig::with_shards(self.shards);
        config.dedup_capacity = self.dedup_capacity;
        if !self.types.is_empty() {
            config.types = self
                .types
                .iter()
                .map(|t| t.parse::<TypeSpec>())
                .collect::<Result<_, _>>()?;
        }
        let mut names: Vec<&str> = config.types.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            bail!("a notification type is given twice");
        }
        if self.channel_queue == 0 || self.channel_concurrency == 0 || self.channel_timeout_ms == 0
        {
            bail!(
                "--channel-queue, --channel-concurrency and --channel-timeout-ms must be positive"
            );
        }
        let bulkhead = BulkheadConfig {
            queue_capacity: self.channel_queue,
            concurrency: self.channel_concurrency,
            timeout: Duration::from_millis(self.channel_timeout_ms),
            ..BulkheadConfig::default()
        };
        config.bulkheads = [bulkhead.clone(), bulkhead.clone(), bulkhead];
        let (apns_token, fcm_token) = match &self.provider_tokens {
            Some(p) => read_tokens(p)?,
            None => (None, None),
        };
        let uri = |flag: &str, s: &str| -> anyhow::Result<http::Uri> {
            s.parse()
                .with_context(|| format!("{flag} {s:?} is not a URL"))
        };
        config.providers = Providers {
            apns: self
                .apns
                .as_deref()
                .map(|u| {
                    anyhow::Ok(ApnsConfig {
                        endpoint: uri("--apns", u)?,
                        topic: self.apns_topic.clone(),
                        bearer_token: apns_token.clone(),
                        connections: 2,
                    })
                })
                .transpose()?,
            fcm: self
                .fcm
                .as_deref()
                .map(|u| {
                    anyhow::Ok(FcmConfig {
                        endpoint: uri("--fcm", u)?,
                        project_id: self.fcm_project.clone(),
                        bearer_token: fcm_token.clone(),
                        connections: 2,
                    })
                })
                .transpose()?,
        };
        Ok(config)
    }
}

impl ServeArgs {
    /// The configuration that shapes answers, as canonical text (sorted;
    /// no addresses, paths or secrets), for the lineage's config hash.
    #[must_use]
    pub fn canonical_config(&self) -> String {
        let mut types = self.types.clone();
        types.sort();
        format!(
            "types={types:?} shards={} dedup_capacity={} channel_queue={} channel_concurrency={} channel_timeout_ms={} apns={:?} apns_topic={} fcm={:?} fcm_project={}",
            self.shards,
            self.dedup_capacity,
            self.channel_queue,
            self.channel_concurrency,
            self.channel_timeout_ms,
            self.apns.is_some(),
            self.apns_topic,
            self.fcm.is_some(),
            self.fcm_project
        )
    }
}

/// A running pipeline with its listeners.
pub struct Running {
    /// The service.
    pub service: Arc<NotifyService>,
    /// Bound gRPC address.
    pub grpc: SocketAddr,
    /// Bound HTTP address.
    pub http: SocketAddr,
    /// The push edge's token key file.
    pub push_key_file: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Running {
    /// Drains the edge node (clients are told to reconnect elsewhere),
    /// stops the listeners and the pipeline (draining channels up to 2 s).
    pub async fn stop(&self) {
        if let Some(node) = self.service.edge().local() {
            node.drain().await;
        }
        let _ = self.stop.send(true);
        self.service.shutdown(Duration::from_secs(2)).await;
    }
}

/// The token key: the given file, or `push.key` in the embedded data
/// directory (created, mode 0600, if missing).
fn push_key(args: &ServeArgs, backend: &Backend) -> anyhow::Result<(TokenKey, PathBuf)> {
    let path = match (&args.push_key_file, backend.data_dir()) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => {
            let path = dir.join("push.key");
            if !path.exists() {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                writeln!(f, "{}", TokenKey::generate()?.to_hex())?;
            }
            path
        }
        (None, None) => bail!(
            "with a NATS backend give --push-key-file (the token key shared with the edge nodes; make one with `timecard-push keygen`)"
        ),
    };
    Ok((TokenKey::from_file(&path)?, path))
}

/// The push edge this process hosts: a node on the HTTP address, its
/// registry (NATS KV with a NATS backend, so edge nodes elsewhere share
/// it, else in process) and the message processor.
async fn start_edge(
    args: &ServeArgs,
    backend: &Backend,
    http_port: u16,
) -> anyhow::Result<(Processor, PathBuf)> {
    let (key, key_path) = push_key(args, backend)?;
    let ttl = Duration::from_secs(30);
    let registry = match backend.nats_client() {
        Some(client) => Registry::nats(client, push::registry::DEFAULT_BUCKET, ttl, 1).await?,
        None => Registry::embedded(ttl),
    };
    let config = EdgeConfig {
        node_id: args
            .push_node
            .clone()
            .unwrap_or_else(|| push::edge::default_node_id("notify", http_port)),
        drain_period: Duration::from_secs(1),
        ..EdgeConfig::default()
    };
    Ok((Processor::hosting(config, key, registry).await?, key_path))
}

/// Starts the pipeline with TrueTime from `clock` and serves it.
pub async fn start_with_clock(args: &ServeArgs, clock: TimeSource) -> anyhow::Result<Running> {
    let mut config = args.config()?;
    let access = args.access.access("notify serve")?;
    let (grpc_l, http_l) = eventlog::args::bind_listeners(args.grpc, args.http).await?;
    let backend = args.common.backend("notify").await?;
    let (edge, push_key_file) = start_edge(args, &backend, http_l.local_addr()?.port()).await?;
    config.edge = Some(edge);
    let replay = ReplaySupport::open(
        &args.capture,
        "notify",
        env!("CARGO_PKG_VERSION"),
        &args.canonical_config(),
        &[("apns", args.apns.clone()), ("fcm", args.fcm.clone())]
            .into_iter()
            .filter_map(|(name, url)| Some((name, url?)))
            .collect::<Vec<_>>(),
        &backend,
        &clock,
    )
    .await?;
    let service = NotifyService::start(config, &backend, clock).await?;
    let (grpc, http) = (grpc_l.local_addr()?, http_l.local_addr()?);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(crate::grpc::serve(
        grpc_l,
        service.clone(),
        access.clone(),
        until_stopped(stopped.clone()),
    ));
    tokio::spawn(crate::http::serve(
        http_l,
        service.clone(),
        access,
        replay,
        until_stopped(stopped),
    ));
    Ok(Running {
        service,
        grpc,
        http,
        push_key_file,
        stop,
    })
}

async fn client(server: SocketAddr) -> anyhow::Result<NotifyClient<tonic::transport::Channel>> {
    NotifyClient::connect(format!("http://{server}"))
        .await
        .with_context(|| {
            format!("cannot reach the notify service at {server} (is it running? `timecard notify serve`)")
        })
}

fn rpc_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", s.code(), s.message())
}

/// Runs a `notify` subcommand to completion (`serve` until Ctrl-C).
pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve(args) => {
            let clock = args.common.open_clock().await.map_err(anyhow::Error::msg)?;
            let running = start_with_clock(&args, clock).await?;
            let status = running.service.status();
            println!(
                "notify: gRPC {} HTTP {} backend {} clock: {}; edge devices: ws://{}/v1/ws?token=T (tokens: timecard-push token --key-file {})",
                running.grpc,
                running.http,
                status["backend"],
                status["clock"],
                running.http,
                running.push_key_file.display()
            );
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            running.stop().await;
            Ok(())
        }
        Command::Publish {
            kind,
            member,
            priority,
            targets,
            body,
            key,
            server,
            auth,
        } => {
            let event = crate::pb::Event {
                r#type: kind,
                priority: priority.unwrap_or_default(),
                member,
                targets,
                body: body.into_bytes(),
                idempotency_key: key.unwrap_or_default(),
            };
            let mut request = tonic::Request::new(crate::pb::PublishRequest {
                events: vec![event],
            });
            auth.authorize(&mut request)?;
            let reply = client(server)
                .await?
                .publish(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            match reply.results.into_iter().next().and_then(|r| r.outcome) {
                Some(crate::pb::publish_result::Outcome::Accepted(a)) => {
                    println!(
                        "accepted: priority {} shard {} key {}",
                        a.priority, a.shard, a.idempotency_key
                    );
                    Ok(())
                }
                Some(crate::pb::publish_result::Outcome::Error(e)) => bail!("refused: {e}"),
                None => bail!("the server sent no result"),
            }
        }
        Command::Pull {
            member,
            since,
            device_type,
            server,
        } => {
            let reply = client(server)
                .await?
                .pull(crate::pb::PullRequest {
                    member,
                    since,
                    limit: 1_000,
                    device_type: device_type.unwrap_or_default(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            for c in &reply.changes {
                println!(
                    "{:>8} {:<9} id {} {} {} {}",
                    c.seq,
                    c.change,
                    c.notification_id,
                    c.r#type,
                    c.priority,
                    String::from_utf8_lossy(&c.body)
                );
            }
            println!(
                "cursor {}{}",
                reply.cursor,
                if reply.more { " (more)" } else { "" }
            );
            Ok(())
        }
        Command::State {
            member,
            at_ns,
            server,
        } => {
            let at_ns = match at_ns {
                Some(t) => t,
                None => TimeSource::system(0).now()?.latest_ns,
            };
            let s = client(server)
                .await?
                .state_at(crate::pb::StateAtRequest { member, at_ns })
                .await
                .map_err(rpc_error)?
                .into_inner();
            for n in &s.notifications {
                println!(
                    "{:>8} {:<9} {} {} {}",
                    n.id,
                    n.status,
                    n.r#type,
                    n.priority,
                    String::from_utf8_lossy(&n.body)
                );
            }
            if !s.uncertain.is_empty() {
                println!("uncertain at {}: {:?}", s.at_ns, s.uncertain);
            }
            Ok(())
        }
        Command::Register {
            member,
            device_id,
            device_type,
            channel,
            token,
            server,
            auth,
        } => {
            let mut request = tonic::Request::new(crate::pb::RegisterDeviceRequest {
                member,
                device_id,
                device_type,
                channel,
                token: token.unwrap_or_default(),
            });
            auth.authorize(&mut request)?;
            let reply = client(server)
                .await?
                .register_device(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            println!("registered; heartbeat within {} s", reply.ttl_s);
            Ok(())
        }
    }
}
