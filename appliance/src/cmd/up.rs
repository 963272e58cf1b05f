//! `timecard up`: the appliance in one process.
//!
//! `up` starts its [`Component`]s: the simulated card (unless a real card or
//! an external simulator is given), then, after the driver has initialised
//! the card as `ptp_ocp`'s probe does, the PTP server on it (whose card
//! sampler also runs the driver's supervisor), fbclockd, the counter and
//! notification services and the web dashboard ([`crate::dashboard`]). The
//! live view shows the card, the supervisor's findings and the PTP server
//! until Ctrl-C or `--duration`. Components stop in reverse order of starting.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use ptp_server::quality::QualityConfig;
use ptp_server::source::SourceThread;
use ptp_server::{CardSource, Server};
use timecard_driver::chrony::ChronyFeed;
use timecard_driver::supervisor::Supervisor;
use timecard_driver::{DeviceSpec, InitOptions, TimeCard};
use timecard_sim::Sim;

use crate::cli::UpArgs;
use crate::duration::format_duration;
use crate::exit::UsageError;
use crate::live::{self, Limits};
use crate::simulator::Simulator;
use crate::{dashboard, device, render};

/// A part of the appliance that runs beside the live view; dropping it stops it.
pub(crate) trait Component {
    /// Short name, for the banner.
    fn name(&self) -> &'static str;
    /// What it is and how to reach it, one line.
    fn summary(&self) -> String;
}

impl Component for Simulator {
    fn name(&self) -> &'static str {
        "simulator"
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "{}; GNSS NMEA on {}",
            self.describe(),
            self.gnss_path().display()
        );
        if let Some(bar) = self.bar() {
            s.push_str(&format!(
                "; attach with --device sim:{} (e.g. `timecard sim fault --bar {} gnss-loss`)",
                bar.display(),
                bar.display()
            ));
        }
        s
    }
}

/// The PTP server and the card sampler that feeds it.
struct Ptp {
    /// The server (stops with graceful cancels when dropped).
    server: Server,
    /// The card sampler (runs the supervisor).
    source: SourceThread,
    /// Whether the standard ports were unavailable and the fallback is used.
    fallback: bool,
    /// chronyd's refclock socket, when the card sampler feeds it.
    chrony_sock: Option<std::path::PathBuf>,
}

impl Component for Ptp {
    fn name(&self) -> &'static str {
        "ptp-server"
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "unicast PTP on {} / {}, clock identity {}",
            self.server.event_addr(),
            self.server.general_addr(),
            self.server.clock_identity()
        );
        if let Some(m) = self.server.monitor_addr() {
            s.push_str(&format!("; stats http://{m}/ and /metrics"));
        }
        if self.fallback {
            s.push_str(" (ports 319/320 unavailable: not root?)");
        }
        if let Some(sock) = &self.chrony_sock {
            s.push_str(&format!(
                "; feeding chronyd's refclock SOCK {}",
                sock.display()
            ));
        }
        s
    }
}

/// fbclockd on this host, syncing to the local PTP server.
struct TrueTimeDaemon {
    /// Its gRPC API (stopped on drop, before the daemon).
    grpc: Option<fbclockd::grpc::GrpcHandle>,
    /// The daemon (stopped on drop).
    handle: Option<fbclockd::DaemonHandle>,
    /// Where it publishes.
    path: std::path::PathBuf,
    /// The server it syncs to.
    server: std::net::SocketAddr,
}

impl Component for TrueTimeDaemon {
    fn name(&self) -> &'static str {
        "fbclockd"
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "TrueTime from SPTP to {}; published in {} (read it with the fbclock library)",
            self.server,
            self.path.display()
        );
        if let Some(g) = &self.grpc {
            s.push_str(&format!("; gRPC API on {}", g.local_addr()));
        }
        s
    }
}

impl Drop for TrueTimeDaemon {
    fn drop(&mut self) {
        if let Some(g) = self.grpc.take()
            && let Err(e) = g.stop()
        {
            tracing::warn!("fbclockd gRPC server: {e}");
        }
        if let Some(h) = self.handle.take() {
            h.stop();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts fbclockd against the PTP server's event address, with its gRPC
/// API on `grpc` (an ephemeral port when that one is taken).
fn start_fbclock(
    server: std::net::SocketAddr,
    path: &std::path::Path,
    grpc: Option<std::net::SocketAddr>,
) -> Result<(TrueTimeDaemon, fbclock::FbClock, fbclockd::DaemonMetrics)> {
    let clock: Arc<dyn fbclockd::LocalClock> = Arc::new(fbclockd::SystemClock);
    // Without root, /run is not writable: publish in the temporary directory instead.
    let fallback = std::env::temp_dir().join("timecard-fbclock");
    let (publisher, path) = match fbclock::Publisher::create(path, clock.clock_id()) {
        Ok(p) => (p, path),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(error = %e, fallback = %fallback.display(), "publishing TrueTime in the temporary directory");
            let p = fbclock::Publisher::create(&fallback, clock.clock_id()).with_context(|| {
                format!("creating the fbclock shared memory {}", fallback.display())
            })?;
            (p, fallback.as_path())
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("creating the fbclock shared memory {}", path.display()));
        }
    };
    let mut config = fbclockd::Config::new(fbclockd::Mode::Sptp, server);
    config.interval = std::time::Duration::from_millis(250);
    let handle = fbclockd::Daemon::spawn(config, clock, publisher).context("starting fbclockd")?;
    let client = handle.client();
    let metrics = handle.metrics();
    let serve =
        |addr| fbclockd::grpc::spawn(addr, Arc::new(handle.client()), handle.status_source());
    // From here on a failure drops the daemon, which removes its file.
    let mut daemon = TrueTimeDaemon {
        grpc: None,
        handle: None,
        path: path.to_path_buf(),
        server,
    };
    daemon.grpc = match grpc {
        Some(addr) => Some(match serve(addr) {
            Ok(g) => g,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::warn!(error = %e, "fbclockd gRPC: {addr} in use, using an ephemeral port");
                serve(std::net::SocketAddr::new(addr.ip(), 0))
                    .context("serving fbclockd's gRPC API")?
            }
            Err(e) => {
                return Err(e).with_context(|| format!("serving fbclockd's gRPC API on {addr}"));
            }
        }),
        None => None,
    };
    daemon.handle = Some(handle);
    Ok((daemon, client, metrics))
}

/// A service's status as JSON, callable from any thread (the dashboard's sampler).
pub(crate) type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A service (counter, notify, dashboard) on its own tokio runtime.
pub(crate) struct ServiceComponent {
    /// Short name, for the banner.
    pub(crate) name: &'static str,
    /// The runtime (dropping it stops the listeners' tasks).
    pub(crate) runtime: Option<tokio::runtime::Runtime>,
    /// The banner line.
    pub(crate) summary: Box<dyn Fn() -> String>,
    /// Stops the service on its runtime.
    pub(crate) stop: Box<dyn Fn(&tokio::runtime::Runtime)>,
    /// The service's status (what its `/v1/status` shows).
    pub(crate) status: StatusFn,
}

impl Component for ServiceComponent {
    fn name(&self) -> &'static str {
        self.name
    }

    fn summary(&self) -> String {
        (self.summary)()
    }
}

impl Drop for ServiceComponent {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            (self.stop)(&rt);
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// Starts a service on a runtime of its own with `start(runtime, ephemeral)`;
/// when its default ports are in use it starts again on ephemeral ports
/// (`ephemeral = true`) and says so. Returns the runtime, the service and
/// whether it fell back.
pub(crate) fn start_service<R>(
    name: &'static str,
    start: impl Fn(&tokio::runtime::Runtime, bool) -> anyhow::Result<R>,
) -> Result<(tokio::runtime::Runtime, R, bool)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("starting the {name} runtime"))?;
    match start(&runtime, false) {
        Ok(r) => Ok((runtime, r, false)),
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
            }) =>
        {
            tracing::warn!(error = %e, "{name}: default ports in use, using ephemeral ports");
            let r =
                start(&runtime, true).with_context(|| format!("starting the {name} service"))?;
            Ok((runtime, r, true))
        }
        Err(e) => Err(e.context(format!("starting the {name} service"))),
    }
}

/// TrueTime from `truetime` when fbclockd runs, else the service's own choice.
fn service_clock(
    truetime: Option<&fbclock::FbClock>,
    fallback: impl FnOnce() -> eventlog::TimeSource,
) -> eventlog::TimeSource {
    truetime.map_or_else(fallback, |c| {
        eventlog::TimeSource::Fbclock(Arc::new(c.clone()))
    })
}

/// Where the services keep their data unless told otherwise.
fn default_backend() -> String {
    format!(
        "embedded:{}",
        std::env::temp_dir().join("timecard-data").display()
    )
}

fn fallback_note(fallback: bool) -> &'static str {
    if fallback {
        " (default ports in use)"
    } else {
        ""
    }
}

/// The services' access policy: `--insecure`, or the token file given with
/// `--api-token-file` or `$TMPDIR/timecard-data/api-token`, created with a
/// fresh token when missing. Returns the policy and a line for the banner.
fn services_access(args: &access::AccessArgs) -> Result<(access::AccessArgs, String)> {
    if args.insecure {
        return Ok((
            access::AccessArgs::insecure(),
            "--insecure: state-changing calls are accepted without a token".to_owned(),
        ));
    }
    let path = args
        .api_token_file
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("timecard-data").join("api-token"));
    access::ensure_token_file(&path)?;
    let line = format!(
        "state-changing calls need the token in {0} (clients: --api-token-file {0}; curl -H \"Authorization: Bearer $(cat {0})\")",
        path.display()
    );
    Ok((access::AccessArgs::token_file(path), line))
}

/// Starts the counter service; TrueTime from `truetime` when fbclockd runs.
fn start_counter(
    args: &crate::cli::CounterArgs,
    access: &access::AccessArgs,
    truetime: Option<&fbclock::FbClock>,
) -> Result<ServiceComponent> {
    let mut serve = counter::cli::ServeArgs {
        grpc: args.counter_grpc,
        http: args.counter_http,
        memcached: args.counter_memcached,
        access: access.clone(),
        ..counter::cli::ServeArgs::defaults()
    };
    serve.common.backend = args.counter_backend.clone().unwrap_or_else(default_backend);
    serve.capture.capture = args.counter_capture;
    let (runtime, running, fallback) = start_service("counter", |rt, ephemeral| {
        let mut serve = serve.clone();
        if ephemeral {
            serve.grpc.set_port(0);
            serve.http.set_port(0);
        }
        let clock = service_clock(truetime, || serve.common.clock());
        rt.block_on(counter::cli::start_with_clock(&serve, clock))
    })?;
    let running = Arc::new(running);
    let stopper = running.clone();
    let status = running.clone();
    Ok(ServiceComponent {
        name: "counter",
        runtime: Some(runtime),
        status: Arc::new(move || serde_json::to_value(status.service.status()).unwrap_or_default()),
        summary: Box::new(move || {
            let st = running.service.status();
            let ns: Vec<String> = st
                .namespaces
                .iter()
                .map(|(n, k)| format!("{n}={k}"))
                .collect();
            format!(
                "gRPC {} HTTP http://{}/v1/status{}; namespaces {}; {}; clock: {}",
                running.grpc,
                running.http,
                fallback_note(fallback),
                ns.join(" "),
                st.backend,
                st.clock
            )
        }),
        stop: Box::new(move |_| stopper.stop()),
    })
}

/// Starts the notification pipeline; TrueTime from `truetime` when fbclockd runs.
fn start_notify(
    args: &crate::cli::NotifyArgs,
    access: &access::AccessArgs,
    truetime: Option<&fbclock::FbClock>,
) -> Result<ServiceComponent> {
    let mut serve = notify::cli::ServeArgs {
        grpc: args.notify_grpc,
        http: args.notify_http,
        access: access.clone(),
        ..notify::cli::ServeArgs::defaults()
    };
    serve.common.backend = args.notify_backend.clone().unwrap_or_else(default_backend);
    serve.capture.capture = args.notify_capture;
    let (runtime, running, fallback) = start_service("notify", |rt, ephemeral| {
        let mut serve = serve.clone();
        if ephemeral {
            serve.grpc.set_port(0);
            serve.http.set_port(0);
        }
        let clock = service_clock(truetime, || serve.common.clock());
        rt.block_on(notify::cli::start_with_clock(&serve, clock))
    })?;
    let running = Arc::new(running);
    let stopper = running.clone();
    let status = running.clone();
    Ok(ServiceComponent {
        name: "notify",
        runtime: Some(runtime),
        status: Arc::new(move || status.service.status()),
        summary: Box::new(move || {
            let st = running.service.status();
            format!(
                "gRPC {} HTTP http://{}/v1/status{}; metrics /metrics; {}; clock: {}; edge devices ws://{}/v1/ws or /v1/sse (tokens: timecard-push token --key-file {})",
                running.grpc,
                running.http,
                fallback_note(fallback),
                st["backend"].as_str().unwrap_or_default(),
                st["clock"].as_str().unwrap_or_default(),
                running.http,
                running.push_key_file.display()
            )
        }),
        stop: Box::new(move |rt| rt.block_on(stopper.stop())),
    })
}

/// Ports used when 319/320 cannot be bound.
const FALLBACK_EVENT_PORT: u16 = 3319;

/// Starts the PTP server (and its card sampler with the supervisor) on `card`.
fn start_ptp(card: Arc<TimeCard>, args: &UpArgs) -> Result<Ptp> {
    let p = &args.ptp;
    let mut config = match &p.ptp_config {
        Some(path) => ptp_server::Config::load(path)?,
        None => ptp_server::Config::default(),
    };
    config.ip = p.ptp_ip;
    config.event_port = p.ptp_port;
    config.general_port = if p.ptp_port == 0 {
        0
    } else {
        p.ptp_port.saturating_add(1)
    };
    config.monitoring = (p.ptp_monitoring != "off").then(|| p.ptp_monitoring.clone());
    config.quality_window = p.ptp_quality_window;
    if let Some(sock) = &p.chrony_sock {
        config.chrony_sock = Some(sock.clone());
    }
    if let Some(h) = p.chrony_max_holdover {
        config.chrony_max_holdover_s = h.as_secs();
    }
    config.validate()?;
    let chrony = match &config.chrony_sock {
        Some(sock) => Some(
            ChronyFeed::new(sock.clone(), config.chrony_max_holdover())
                .context("creating a Unix datagram socket for chronyd")?,
        ),
        None => None,
    };
    let supervisor = match live::Supervision::own(&card) {
        live::Supervision::Own(s) => s,
        live::Supervision::Shared(_) => Supervisor::new(),
    };
    let source = CardSource::spawn_feeding(
        card,
        Some(supervisor),
        QualityConfig {
            window: config.quality_window,
            ..QualityConfig::default()
        },
        chrony,
    );
    let (server, fallback) = match Server::start(&config, source.source()) {
        Ok(s) => (s, false),
        Err(e) if p.ptp_port == ptp_proto::EVENT_PORT => {
            tracing::warn!(error = %e, "falling back to ports {FALLBACK_EVENT_PORT}/{}", FALLBACK_EVENT_PORT + 1);
            config.event_port = FALLBACK_EVENT_PORT;
            config.general_port = FALLBACK_EVENT_PORT + 1;
            (
                Server::start(&config, source.source()).context("starting the PTP server")?,
                true,
            )
        }
        Err(e) => return Err(e).context("starting the PTP server"),
    };
    Ok(Ptp {
        server,
        source,
        fallback,
        chrony_sock: config.chrony_sock,
    })
}

/// The card `up` drives, and where it came from.
struct Card {
    /// The driver's handle.
    card: Arc<TimeCard>,
    /// The simulator behind it, for ground truth in the live view.
    truth: Option<Sim>,
    /// What it is, for the banner.
    what: String,
}

/// Starts the simulator component, or opens the given device.
fn bring_up(
    device: Option<&DeviceSpec>,
    args: &UpArgs,
    components: &mut Vec<Box<dyn Component>>,
) -> Result<Card> {
    match device {
        None | Some(DeviceSpec::Embedded) => {
            #[allow(clippy::float_cmp)]
            if args.ptp.chrony_sock.is_some() && args.params.acceleration != 1.0 {
                return Err(UsageError(format!(
                    "--chrony-sock feeds chronyd the system time of each sample; a card at \
                     --acceleration {} keeps simulated time, whose samples chronyd drops as \
                     too old or too new: use --acceleration 1",
                    args.params.acceleration
                ))
                .into());
            }
            let link = args.bar.as_ref().map(|b| b.with_extension("gnss"));
            let sim = Simulator::start(&args.params, args.bar.as_deref(), link.as_deref())?;
            let card = Arc::new(device::open_simulator(
                sim.sim(),
                Some(sim.gnss_path().to_path_buf()),
            )?);
            let truth = Some(sim.sim().clone());
            let what = sim.describe();
            components.push(Box::new(sim));
            Ok(Card { card, truth, what })
        }
        Some(spec) => {
            if args.bar.is_some() {
                return Err(UsageError(format!(
                    "--bar makes `up` start its own simulator; it does not combine with --device {spec}"
                ))
                .into());
            }
            let opened = device::open(spec)?;
            Ok(Card {
                what: format!("the card at {spec}"),
                card: Arc::new(opened.card),
                truth: opened.truth,
            })
        }
    }
}

/// Writes a message for people: to `out`, or to stderr when `out` carries JSON.
fn say(json: bool, out: &mut dyn Write, text: &str) -> std::io::Result<()> {
    if json {
        let mut err = std::io::stderr().lock();
        err.write_all(text.as_bytes())?;
        err.flush()
    } else {
        out.write_all(text.as_bytes())?;
        out.flush()
    }
}

/// Initialises the card, prints what runs, and runs the live view until the end.
fn serve(
    card: &Card,
    components: &mut Vec<Box<dyn Component>>,
    args: &UpArgs,
    terminal: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let started = Instant::now();
    card.card
        .init(InitOptions::default())
        .context("initialising the card")?;
    let mut shared = None;
    let mut stats = None;
    let mut truetime = None;
    let mut fbclockd = None;
    if !args.ptp.no_ptp {
        let ptp = start_ptp(card.card.clone(), args)?;
        shared = Some(ptp.source.source());
        stats = Some(ptp.server.stats());
        let event = ptp.server.event_addr();
        components.push(Box::new(ptp));
        if !args.no_fbclock {
            let (daemon, client, metrics) =
                start_fbclock(event, &args.fbclock_shm, args.fbclock_grpc.0)?;
            truetime = Some(client);
            fbclockd = Some(metrics);
            components.push(Box::new(daemon));
        }
    }
    let counter_on = !args.counter.no_counter;
    let notify_on = !args.notify.no_notify;
    let access = if counter_on || notify_on {
        Some(services_access(&args.access)?)
    } else {
        None
    };
    let services_access = access.as_ref().map(|(a, _)| a).cloned().unwrap_or_default();
    let mut counter_status = None;
    if counter_on {
        let counter = start_counter(&args.counter, &services_access, truetime.as_ref())?;
        counter_status = Some(counter.status.clone());
        components.push(Box::new(counter));
    }
    let mut notify_status = None;
    if notify_on {
        let notify = start_notify(&args.notify, &services_access, truetime.as_ref())?;
        notify_status = Some(notify.status.clone());
        components.push(Box::new(notify));
    }
    let dashboard_on = !args.dashboard.no_dashboard;
    if dashboard_on {
        components.push(Box::new(dashboard::start(
            args.dashboard.addr,
            dashboard::Sources {
                card: card.card.clone(),
                truth: card.truth.clone(),
                supervisor: shared.clone(),
                ptp: stats.clone(),
                truetime: truetime.clone(),
                fbclockd,
                counter: counter_status,
                notify: notify_status,
            },
        )?));
    }
    let stop = match args.duration {
        Some(d) => format!("stops after {}, or press Ctrl-C", format_duration(d)),
        None => "press Ctrl-C to stop".to_owned(),
    };
    let mut banner = format!(
        "timecard up: {} + driver + supervisor{}{}{}{}{} running; {stop}\n",
        card.what,
        if shared.is_some() {
            " + PTP server"
        } else {
            ""
        },
        if truetime.is_some() {
            " + fbclockd"
        } else {
            ""
        },
        if counter_on { " + counter" } else { "" },
        if notify_on { " + notify" } else { "" },
        if dashboard_on { " + dashboard" } else { "" }
    );
    for c in components.iter() {
        banner.push_str(&format!("  {:<10} {}\n", c.name(), c.summary()));
    }
    if let Some((_, line)) = &access {
        banner.push_str(&format!("  {:<10} {line}\n", "api"));
    }
    if let Some(tty) = card.card.gnss_serial() {
        banner.push_str(&format!(
            "  {:<10} reads GNSS NMEA from {}\n",
            "supervisor",
            tty.display()
        ));
    }
    say(args.live.json, out, &banner)?;
    let supervision = match shared {
        Some(source) => live::Supervision::Shared(source),
        None => live::Supervision::own(&card.card),
    };
    let last = live::run(
        &card.card,
        supervision,
        card.truth.as_ref(),
        live::Extras {
            ptp: stats.as_deref(),
            truetime: truetime.as_ref(),
        },
        &args.live,
        Limits {
            count: None,
            until: args.duration.map(|d| started + d),
        },
        terminal,
        out,
    )?;
    let state = last.map_or_else(
        || "no sample taken".to_owned(),
        |s| {
            format!(
                "last state {}, source {}, card-host {}",
                s.sync.label(),
                s.clock_source,
                s.card_minus_host_ns
                    .map_or_else(|| "-".to_owned(), render::signed_ns)
            )
        },
    );
    say(
        args.live.json,
        out,
        &format!(
            "timecard up: stopping after {:.1} s ({state})\n",
            started.elapsed().as_secs_f64()
        ),
    )?;
    Ok(())
}

/// Runs the appliance until Ctrl-C or `--duration`, then stops the
/// components in reverse order.
///
/// # Errors
/// Usage errors, a missing or dead device (exit 69), component start-up
/// failures, driver errors, or a failed write.
pub fn run(
    device: Option<&DeviceSpec>,
    args: &UpArgs,
    terminal: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let mut components: Vec<Box<dyn Component>> = Vec::new();
    let result = bring_up(device, args, &mut components)
        .and_then(|card| serve(&card, &mut components, args, terminal, out));
    while let Some(component) = components.pop() {
        tracing::info!(component = component.name(), "stopping");
        drop(component);
    }
    result
}
