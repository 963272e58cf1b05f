//! `ptp-server`: serve a Time Card's time over unicast PTP (ptp4u style).
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ptp_server::config::{Config, Timestamping};
use ptp_server::quality::QualityConfig;
use ptp_server::{CardSource, Server};
use timecard_driver::InitOptions;
use timecard_driver::chrony::ChronyFeed;
use timecard_driver::device::{self, DeviceSpec};
use timecard_driver::supervisor::Supervisor;
use timecard_hw::regs::ClockSource;

/// Serve a Time Card's time to a fleet over IEEE 1588-2019 unicast PTP.
///
/// Clients negotiate Announce, Sync and Delay_Resp streams with Signaling
/// (linuxptp's `ptp4l` with a unicast master table does), or send stateless
/// SPTP Delay_Req. Timestamps come from the card through the driver, so a card
/// in holdover is served as holdover time with clockClass 7.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "\
Examples:
  ptp-server                                   embedded simulated card, 127.0.0.1:319/320
  ptp-server --device sim:/tmp/card.bar --ip 10.0.0.1
  ptp-server --config /etc/timecard/ptp-server.toml
  ptp-server --device pci:0000:01:00.0 --chrony-sock /run/chrony/timecard.sock
  curl -s 127.0.0.1:8888/ ; curl -s 127.0.0.1:8888/metrics    (timecard_ptp_server_*)

Drain: create the drain file (default none; --drain-file) to cancel every
subscription and refuse new ones; remove it (or create the undrain file) to
serve again. SIGTERM/SIGINT cancel every subscription, then exit."
)]
struct Args {
    /// TOML configuration file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Card: `pci:0000:01:00.0`, `sim:PATH`, or `sim` (embedded simulator).
    #[arg(long, default_value = "sim")]
    device: DeviceSpec,
    /// Address to serve on.
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// Interface (hardware timestamping, clock identity from its MAC).
    #[arg(long)]
    interface: Option<String>,
    /// Event port.
    #[arg(long)]
    event_port: Option<u16>,
    /// General port.
    #[arg(long)]
    general_port: Option<u16>,
    /// PTP domain.
    #[arg(long)]
    domain: Option<u8>,
    /// DSCP for every packet (0-63).
    #[arg(long)]
    dscp: Option<u8>,
    /// Send workers.
    #[arg(long)]
    workers: Option<usize>,
    /// Receive sockets per port.
    #[arg(long)]
    recv_workers: Option<usize>,
    /// Timestamping: `software` or `hardware`.
    #[arg(long, value_parser = ["software", "hardware"])]
    timestamping: Option<String>,
    /// Monitoring listener (`/` JSON, `/metrics` Prometheus); `off` disables.
    #[arg(long)]
    monitoring: Option<String>,
    /// Drain while this file exists.
    #[arg(long)]
    drain_file: Option<PathBuf>,
    /// Never drain while this file exists.
    #[arg(long)]
    undrain_file: Option<PathBuf>,
    /// Clock identity (`aabbcc.fffe.ddeeff`).
    #[arg(long)]
    clock_identity: Option<String>,
    /// Longest subscription granted, seconds.
    #[arg(long)]
    max_duration: Option<u32>,
    /// Fastest interval granted, log2 seconds (e.g. -7).
    #[arg(long, allow_hyphen_values = true)]
    min_log_interval: Option<i8>,
    /// Quality window, seconds (c4u: 600).
    #[arg(long)]
    quality_window: Option<usize>,
    /// Feed chronyd from the card: the PATH of `refclock SOCK PATH` in
    /// chrony.conf (one sample a second while the card is locked or in young
    /// holdover; see `timecard chrony --help`).
    #[arg(long, value_name = "PATH")]
    chrony_sock: Option<PathBuf>,
    /// Feed chronyd this many seconds after the card was last seen locked
    /// to GNSS (default 3600).
    #[arg(long, value_name = "SECONDS")]
    chrony_max_holdover_s: Option<u64>,
    /// Stop after this many seconds (tests, demos).
    #[arg(long)]
    duration: Option<u64>,
    // --log-level (default info) and --log-format.
    #[command(flatten)]
    log: operate::logging::LogArgs,
}

fn config(args: &Args) -> Result<Config> {
    let mut c = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    macro_rules! take {
        ($($f:ident),*) => { $( if let Some(v) = args.$f.clone() { c.$f = v; } )* };
    }
    take!(
        ip,
        event_port,
        general_port,
        domain,
        dscp,
        workers,
        recv_workers,
        quality_window,
        min_log_interval,
        chrony_max_holdover_s
    );
    if let Some(p) = &args.chrony_sock {
        c.chrony_sock = Some(p.clone());
    }
    if let Some(i) = &args.interface {
        c.interface = Some(i.clone());
    }
    if let Some(t) = &args.timestamping {
        c.timestamping = if t == "hardware" {
            Timestamping::Hardware
        } else {
            Timestamping::Software
        };
    }
    if let Some(m) = &args.monitoring {
        c.monitoring = (m != "off").then(|| m.clone());
    }
    if let Some(d) = &args.drain_file {
        c.drain_file = Some(d.clone());
    }
    if let Some(d) = &args.undrain_file {
        c.undrain_file = Some(d.clone());
    }
    if let Some(id) = &args.clock_identity {
        c.clock_identity = Some(id.clone());
    }
    if let Some(d) = args.max_duration {
        c.max_duration_s = d;
    }
    c.validate()?;
    Ok(c)
}

fn main() -> Result<()> {
    let args = Args::parse();
    args.log.init("info")?;
    let config = config(&args)?;
    let card = match &args.device {
        DeviceSpec::Embedded => {
            let sim = timecard_sim::Sim::new(&timecard_sim::SimConfig {
                mode: timecard_sim::ClockMode::Realtime { acceleration: 1.0 },
                ..timecard_sim::SimConfig::default()
            })?;
            let card = device::open_sim(sim)?;
            card.init(InitOptions::default())?;
            card
        }
        other => {
            let card = device::open(other).with_context(|| format!("opening {other}"))?;
            // A card nothing has brought up since reset free-runs from 1970 with
            // source NONE: initialise it as ptp_ocp's probe would.
            if card.clock_source()? == Some(ClockSource::None) {
                eprintln!(
                    "ptp-server: {other} was not initialised (clock source NONE); initialising it"
                );
                card.init(InitOptions::default())?;
            }
            card
        }
    };
    let card = Arc::new(card);
    let chrony = match &config.chrony_sock {
        Some(sock) => Some(
            ChronyFeed::new(sock.clone(), config.chrony_max_holdover())
                .context("creating a Unix datagram socket for chronyd")?,
        ),
        None => None,
    };
    let source_thread = CardSource::spawn_feeding(
        card,
        Some(Supervisor::new()),
        QualityConfig {
            window: config.quality_window,
            ..QualityConfig::default()
        },
        chrony,
    );
    let server = Server::start(&config, source_thread.source())?;
    eprintln!(
        "ptp-server: serving {} (event {}, general {}), clock identity {}{}{}",
        args.device,
        server.event_addr(),
        server.general_addr(),
        server.clock_identity(),
        server
            .monitor_addr()
            .map_or(String::new(), |m| format!(", stats on http://{m}/")),
        config
            .chrony_sock
            .as_ref()
            .map_or(String::new(), |p| format!(
                ", feeding chronyd's refclock SOCK {}",
                p.display()
            )),
    );
    let stop = Arc::new(AtomicBool::new(false));
    for s in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(s, 130, stop.clone())?;
        signal_hook::flag::register(s, stop.clone())?;
    }
    let deadline = args
        .duration
        .map(|s| std::time::Instant::now() + Duration::from_secs(s));
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| std::time::Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("ptp-server: cancelling subscriptions and stopping");
    server.shutdown();
    drop(source_thread);
    Ok(())
}
