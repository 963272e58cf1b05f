//! `fbclockd`: the TrueTime daemon.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fbclockd::cli::Args;
use fbclockd::status::StatusSource;
use fbclockd::{Daemon, LocalClock, SystemClock};

/// Exit code for a bad invocation (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;
/// Exit code when the sockets cannot be set up (sysexits EX_UNAVAILABLE).
const EX_UNAVAILABLE: u8 = 69;
/// Exit code when the shared-memory file cannot be created (EX_CANTCREAT).
const EX_CANTCREAT: u8 = 73;

fn run(args: &Args) -> Result<ExitCode> {
    let config = args.config();
    if let Err(e) = config.validate() {
        eprintln!("fbclockd: {e}");
        return Ok(ExitCode::from(EX_USAGE));
    }
    let clock = Arc::new(SystemClock);
    let publisher = match fbclock::Publisher::create(&args.shm, clock.clock_id()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fbclockd: cannot create the shared-memory file: {e}");
            return Ok(ExitCode::from(EX_CANTCREAT));
        }
    };
    let handle = match Daemon::spawn(config, clock, publisher) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("fbclockd: {e}");
            return Ok(ExitCode::from(EX_UNAVAILABLE));
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let metrics = match args.metrics.0 {
        Some(addr) => match serve_metrics(addr, &handle, &stop) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("fbclockd: cannot serve metrics on {addr}: {e}");
                return Ok(ExitCode::from(EX_UNAVAILABLE));
            }
        },
        None => None,
    };
    let grpc = match args.grpc.0 {
        Some(addr) => {
            match fbclockd::grpc::spawn(addr, Arc::new(handle.client()), handle.status_source()) {
                Ok(g) => Some(g),
                // TrueTime in shared memory is what clients and services
                // need; the optional read-only API does not get to stop it.
                Err(e) => {
                    tracing::error!(%addr, "cannot serve the gRPC API, running without it: {e}");
                    None
                }
            }
        }
        None => None,
    };
    tracing::info!(
        server = %args.server,
        mode = ?args.mode,
        shm = %args.shm.display(),
        interval = ?args.interval,
        config = ?args.config_file.config,
        "fbclockd started"
    );
    for s in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once.
        signal_hook::flag::register_conditional_shutdown(s, 130, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(s, stop.clone()).context("installing signal handlers")?;
    }
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = handle.status();
    tracing::info!(state = ?st.state, exchanges = ?st.exchanges, "fbclockd stopping");
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = metrics {
        let _ = t.join();
    }
    if let Some(g) = grpc
        && let Err(e) = g.stop()
    {
        tracing::warn!("gRPC server: {e}");
    }
    handle.stop();
    Ok(ExitCode::SUCCESS)
}

/// Serves `handle`'s metrics on `addr` until `stop` is set.
fn serve_metrics(
    addr: std::net::SocketAddr,
    handle: &fbclockd::DaemonHandle,
    stop: &Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use operate::metrics::{Exposition, http};
    let listener = std::net::TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let source = handle.metrics();
    let thread = http::spawn(listener, stop.clone(), "fbclockd-metrics", move |path| {
        (path == "/metrics").then(|| {
            let mut m = Exposition::new("fbclockd", env!("CARGO_PKG_VERSION"));
            source.write(&mut m);
            http::Page::metrics(m.finish())
        })
    })?;
    tracing::info!(%bound, "metrics on http://{bound}/metrics");
    Ok(thread)
}

fn main() -> Result<ExitCode> {
    let args: Args = operate::config::parse();
    args.log.init("info")?;
    if args.max_drift_ppb < 0.0 || !args.max_drift_ppb.is_finite() {
        bail!("--max-drift-ppb must be a non-negative number");
    }
    run(&args)
}
