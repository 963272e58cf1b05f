//! The command line: `serve` runs the service; `add`, `get`, `clear` talk to
//! a running one over gRPC; `status` reads its HTTP status. The same
//! arguments are mounted under `timecard counter`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use eventlog::args::ServiceArgs;
use eventlog::{IdempotencyToken, TimeSource};
use replay::capture::ReplaySupport;

use crate::pb::counter_client::CounterClient;
use crate::service::{CounterConfig, CounterService, Kind, parse_namespace};

/// Default gRPC address.
pub const DEFAULT_GRPC: &str = "127.0.0.1:7340";
/// Default HTTP address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7341";

/// `counter` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the counter service (gRPC + HTTP/JSON).
    Serve(ServeArgs),
    /// AddCount (with --get: AddAndGetCount).
    Add {
        /// Namespace.
        namespace: String,
        /// Counter name.
        counter: String,
        /// Signed delta.
        #[arg(allow_hyphen_values = true)]
        delta: i64,
        /// Idempotency token EVENT_TIME_NS:NONCE (retries with the same token count once).
        #[arg(long)]
        token: Option<String>,
        /// Return the count after the add.
        #[arg(long)]
        get: bool,
        /// Server.
        #[arg(long, default_value = DEFAULT_GRPC)]
        server: SocketAddr,
        /// API token.
        #[command(flatten)]
        auth: access::ClientArgs,
    },
    /// GetCount.
    Get {
        /// Namespace.
        namespace: String,
        /// Counter name.
        counter: String,
        /// Server.
        #[arg(long, default_value = DEFAULT_GRPC)]
        server: SocketAddr,
    },
    /// ClearCount.
    Clear {
        /// Namespace.
        namespace: String,
        /// Counter name.
        counter: String,
        /// Idempotency token.
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
    /// A namespace: NAME=TYPE with TYPE best-effort[:TTL_S], eventual or
    /// accurate. Repeat for several.
    #[arg(long = "namespace", value_name = "NAME=TYPE", default_values_t = ["views=eventual".to_owned(), "likes=accurate".to_owned(), "experiments=best-effort:3600".to_owned()])]
    pub namespaces: Vec<String>,
    /// gRPC listen address (loopback unless you mean it).
    #[arg(long, default_value = DEFAULT_GRPC)]
    pub grpc: SocketAddr,
    /// HTTP/JSON listen address.
    #[arg(long, default_value = DEFAULT_HTTP)]
    pub http: SocketAddr,
    /// memcached for best-effort namespaces.
    #[arg(long, value_name = "HOST:PORT")]
    pub memcached: Option<SocketAddr>,
    /// Events older than this are refused; rollups lag by it, ms.
    #[arg(long, default_value_t = 5_000)]
    pub accept_limit_ms: u64,
    /// Longest an append may take before the add is reported failed, ms.
    #[arg(long, default_value_t = 2_000)]
    pub grace_ms: u64,
    /// Rollup period, ms.
    #[arg(long, default_value_t = 250)]
    pub rollup_interval_ms: u64,
    /// Capture for replay testing.
    #[command(flatten)]
    pub capture: replay::capture::CaptureArgs,
    /// Who may change counts: `--api-token-file` or `--insecure`.
    #[command(flatten)]
    pub access: access::AccessArgs,
}

/// Parses `ServeArgs` alone (for [`ServeArgs::defaults`]).
#[derive(clap::Parser)]
struct ServeOnly {
    #[command(flatten)]
    args: ServeArgs,
}

impl ServeArgs {
    /// The defaults of `serve`, as its flags declare them (one source of
    /// truth for `timecard up`, tests and benchmarks).
    #[must_use]
    pub fn defaults() -> Self {
        <ServeOnly as clap::Parser>::parse_from(["serve"]).args
    }

    /// The service configuration these arguments describe.
    pub fn config(&self) -> anyhow::Result<CounterConfig> {
        let mut namespaces: HashMap<String, Kind> = HashMap::new();
        for s in &self.namespaces {
            let (n, k) = parse_namespace(s).map_err(anyhow::Error::msg)?;
            if namespaces.insert(n.clone(), k).is_some() {
                bail!("namespace {n} given twice");
            }
        }
        const DAY_MS: u64 = 86_400_000;
        for (name, v) in [
            ("--accept-limit-ms", self.accept_limit_ms),
            ("--grace-ms", self.grace_ms),
            ("--rollup-interval-ms", self.rollup_interval_ms),
        ] {
            if v == 0 || v > DAY_MS {
                bail!("{name} {v}: must be between 1 and {DAY_MS} (one day)");
            }
        }
        self.common.check().map_err(anyhow::Error::msg)?;
        self.capture.check().map_err(anyhow::Error::msg)?;
        Ok(CounterConfig {
            namespaces,
            accept_limit: Duration::from_millis(self.accept_limit_ms),
            grace: Duration::from_millis(self.grace_ms),
            rollup_interval: Duration::from_millis(self.rollup_interval_ms),
            memcached: self.memcached,
            ..CounterConfig::default()
        })
    }
}

impl ServeArgs {
    /// The configuration that shapes answers, as canonical text (sorted;
    /// no addresses or paths), for the lineage's config hash.
    #[must_use]
    pub fn canonical_config(&self) -> String {
        let mut namespaces = self.namespaces.clone();
        namespaces.sort();
        format!(
            "namespaces={namespaces:?} accept_limit_ms={} grace_ms={} rollup_interval_ms={} memcached={}",
            self.accept_limit_ms,
            self.grace_ms,
            self.rollup_interval_ms,
            self.memcached.is_some()
        )
    }
}

/// A running service with its listeners.
pub struct Running {
    /// The service.
    pub service: CounterService,
    /// Bound gRPC address.
    pub grpc: SocketAddr,
    /// Bound HTTP address.
    pub http: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Running {
    /// Stops the listeners and the service.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        self.service.shutdown();
    }
}

/// Starts the service and both listeners on the current runtime.
pub async fn start(args: &ServeArgs) -> anyhow::Result<Running> {
    let clock = args.common.open_clock().await.map_err(anyhow::Error::msg)?;
    start_with_clock(args, clock).await
}

/// As [`start`], with TrueTime from `clock` (`timecard up` hands over its
/// in-process fbclockd client).
pub async fn start_with_clock(args: &ServeArgs, clock: TimeSource) -> anyhow::Result<Running> {
    let cfg = args.config()?;
    let access = args.access.access("counter serve")?;
    let (grpc_l, http_l) = eventlog::args::bind_listeners(args.grpc, args.http).await?;
    let backend = args.common.backend("counter").await?;
    let replay = ReplaySupport::open(
        &args.capture,
        "counter",
        env!("CARGO_PKG_VERSION"),
        &args.canonical_config(),
        &args
            .memcached
            .map(|m| ("memcached", m.to_string()))
            .into_iter()
            .collect::<Vec<_>>(),
        &backend,
        &clock,
    )
    .await?;
    let service = CounterService::start(cfg, clock, backend).await?;
    let (grpc, http) = (grpc_l.local_addr()?, http_l.local_addr()?);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let s1 = service.clone();
    let r1 = rx.clone();
    let a1 = access.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::grpc::serve(grpc_l, s1, a1, wait(r1)).await {
            tracing::error!(error = %e, "counter gRPC server failed");
        }
    });
    let s2 = service.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::http::serve(http_l, s2, &access, &replay, wait(rx)).await {
            tracing::error!(error = %e, "counter HTTP server failed");
        }
    });
    Ok(Running {
        service,
        grpc,
        http,
        stop,
    })
}

fn pb_token(s: Option<String>) -> anyhow::Result<Option<crate::pb::IdempotencyToken>> {
    s.map(|s| {
        let t: IdempotencyToken = s.parse()?;
        Ok(crate::pb::IdempotencyToken {
            event_time_ns: t.event_time_ns,
            nonce: format!("{:032x}", t.nonce),
        })
    })
    .transpose()
}

async fn client(server: SocketAddr) -> anyhow::Result<CounterClient<tonic::transport::Channel>> {
    CounterClient::connect(format!("http://{server}"))
        .await
        .with_context(|| format!("cannot reach the counter service at {server} (is it running? `timecard counter serve`)"))
}

fn show(r: &crate::pb::CountReply) -> String {
    let mut s = if r.has_count {
        format!("{} ({})", r.count, r.consistency)
    } else {
        format!("ok ({})", r.consistency)
    };
    if r.duplicate {
        s.push_str(", duplicate: counted once");
    }
    if !r.token.is_empty() {
        s.push_str(&format!(", token {}", r.token));
    }
    s
}

/// Runs a `counter` subcommand to completion (`serve` until Ctrl-C).
pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve(args) => {
            let running = start(&args).await?;
            println!(
                "counter: gRPC {} HTTP {} backend {} clock: {}",
                running.grpc,
                running.http,
                running.service.status().backend,
                running.service.status().clock
            );
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            running.stop();
            Ok(())
        }
        Command::Add {
            namespace,
            counter,
            delta,
            token,
            get,
            server,
            auth,
        } => {
            let mut req = tonic::Request::new(crate::pb::AddCountRequest {
                namespace,
                counter,
                delta,
                idempotency_token: pb_token(token)?,
            });
            auth.authorize(&mut req)?;
            let mut c = client(server).await?;
            let r = if get {
                c.add_and_get_count(req).await
            } else {
                c.add_count(req).await
            };
            println!(
                "{}",
                show(
                    &r.map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
                        .into_inner()
                )
            );
            Ok(())
        }
        Command::Get {
            namespace,
            counter,
            server,
        } => {
            let r = client(server)
                .await?
                .get_count(crate::pb::GetCountRequest { namespace, counter })
                .await
                .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?;
            println!("{}", show(&r.into_inner()));
            Ok(())
        }
        Command::Clear {
            namespace,
            counter,
            token,
            server,
            auth,
        } => {
            let mut req = tonic::Request::new(crate::pb::ClearCountRequest {
                namespace,
                counter,
                idempotency_token: pb_token(token)?,
            });
            auth.authorize(&mut req)?;
            let r = client(server)
                .await?
                .clear_count(req)
                .await
                .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?;
            println!("{}", show(&r.into_inner()));
            Ok(())
        }
    }
}
