//! Wiring: sockets, receive and send workers, drain control, monitoring.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use ptp_proto::ClockIdentity;
use tracing::info;

use crate::config::{Config, Timestamping, parse_clock_identity};
use crate::net::{PtpSocket, SocketOptions, TimestampMode};
use crate::receiver::{RxShared, run_event, run_general};
use crate::source::TimeSource;
use crate::stats::Stats;
use crate::worker::{Command, Worker, WorkerConfig};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A socket could not be set up.
    #[error("{what}: {source}")]
    Socket {
        /// Which socket.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    rx: Arc<RxShared>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    event_addr: SocketAddr,
    general_addr: SocketAddr,
    monitor_addr: Option<SocketAddr>,
    clock_identity: ClockIdentity,
}

fn mode(c: &Config) -> TimestampMode {
    match (c.timestamping, &c.interface) {
        (Timestamping::Hardware, Some(i)) => TimestampMode::Hardware {
            interface: i.clone(),
        },
        _ => TimestampMode::Software,
    }
}

/// The clock identity: configured, else the interface's MAC as EUI-64, else
/// one derived from the host name (stable across restarts).
fn clock_identity(c: &Config) -> ClockIdentity {
    if let Some(id) = c
        .clock_identity
        .as_deref()
        .and_then(|s| parse_clock_identity(s).ok())
    {
        return id;
    }
    let mac = c
        .interface
        .as_deref()
        .and_then(|i| {
            std::fs::read_to_string(Path::new("/sys/class/net").join(i).join("address")).ok()
        })
        .and_then(|s| {
            let b: Vec<u8> = s
                .trim()
                .split(':')
                .filter_map(|x| u8::from_str_radix(x, 16).ok())
                .collect();
            <[u8; 6]>::try_from(b).ok()
        })
        .filter(|m| m.iter().any(|b| *b != 0));
    let mac = mac.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in host.trim().bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let b = h.to_be_bytes();
        // Locally administered, unicast.
        [(b[0] | 0x02) & 0xFE, b[1], b[2], b[3], b[4], b[5]]
    });
    ClockIdentity::from_mac(mac)
}

impl Server {
    /// Binds every socket and starts the threads.
    ///
    /// # Errors
    /// Configuration or socket errors, with the address that failed.
    pub fn start(config: &Config, time: Arc<dyn TimeSource>) -> Result<Self, StartError> {
        config.validate()?;
        let ts_mode = mode(config);
        let sock_err = |what: String| move |source| StartError::Socket { what, source };
        let stats = Arc::new(Stats::new(config.workers));
        stats.record_served(time.served());
        let stop = Arc::new(AtomicBool::new(false));
        let identity = clock_identity(config);
        let draining = Arc::new(AtomicBool::new(false));

        // Every socket is bound before any thread starts, so a failure
        // leaves nothing running and nothing bound.

        // Send workers, each with its own ephemeral sockets.
        let mut worker_sockets = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            let opts = SocketOptions {
                timestamping: Some(ts_mode.clone()),
                dscp: config.dscp,
                ..SocketOptions::default()
            };
            let any = SocketAddr::new(config.ip, 0);
            let event = PtpSocket::bind(any, &opts)
                .map_err(sock_err(format!("worker {i} event socket on {any}")))?;
            let general = PtpSocket::bind(
                any,
                &SocketOptions {
                    timestamping: None,
                    ..opts
                },
            )
            .map_err(sock_err(format!("worker {i} general socket on {any}")))?;
            worker_sockets.push((event, general));
        }

        // Receive sockets: SO_REUSEPORT groups on the event and general ports.
        let bind_group = |port: u16,
                          timestamping: Option<TimestampMode>|
         -> Result<(SocketAddr, Vec<PtpSocket>), StartError> {
            let mut addr = SocketAddr::new(config.ip, port);
            let mut group = Vec::with_capacity(config.recv_workers);
            for _ in 0..config.recv_workers {
                let opts = SocketOptions {
                    reuse_port: true,
                    timestamping: timestamping.clone(),
                    dscp: config.dscp,
                    rx_overflow_counter: true,
                    recv_buffer: Some(8 << 20),
                    ..SocketOptions::default()
                };
                let sock = PtpSocket::bind(addr, &opts)
                    .map_err(sock_err(format!("listening on {addr}")))?;
                sock.set_read_timeout(Some(Duration::from_millis(200)))
                    .map_err(sock_err(format!("timeout on {addr}")))?;
                addr = sock
                    .local_addr()
                    .map_err(sock_err(format!("address of {addr}")))?;
                group.push(sock);
            }
            Ok((addr, group))
        };
        let (event_addr, event_group) = bind_group(config.event_port, Some(ts_mode.clone()))?;
        let (general_addr, general_group) = bind_group(config.general_port, None)?;

        // Monitoring.
        let monitor = match config.monitoring.as_deref().filter(|s| !s.is_empty()) {
            Some(m) => {
                let l =
                    TcpListener::bind(m).map_err(sock_err(format!("monitoring listener {m}")))?;
                let a = l
                    .local_addr()
                    .map_err(sock_err(format!("monitoring listener {m}")))?;
                Some((l, a))
            }
            None => None,
        };

        let worker_cfg = WorkerConfig {
            clock_identity: identity,
            domain: config.domain,
            priority: (config.priority1, config.priority2),
            txts_timeout: config.txts_timeout(),
            txts_attempts: config.txts_attempts,
            draining: draining.clone(),
        };
        let mut queues: Vec<SyncSender<Command>> = Vec::new();
        let mut workers = Vec::new();
        for (i, (event, general)) in worker_sockets.into_iter().enumerate() {
            let (tx, rx) = sync_channel(config.queue);
            queues.push(tx);
            let worker = Worker::new(
                i,
                worker_cfg.clone(),
                event,
                general,
                time.clone(),
                stats.clone(),
            );
            workers.push((worker, rx));
        }
        let rx = Arc::new(RxShared {
            workers: queues,
            stats: stats.clone(),
            limits: config.limits(),
            draining,
            stop: AtomicBool::new(false),
            clock_identity: identity,
            domain: config.domain,
            client_event_port: config.client_event_port,
            max_streams: config.max_streams,
        });

        // From here on the server exists: if a thread cannot be spawned,
        // dropping it stops and joins the threads already running.
        let mut server = Self {
            rx: rx.clone(),
            stop: stop.clone(),
            threads: Vec::new(),
            event_addr,
            general_addr,
            monitor_addr: monitor.as_ref().map(|(_, a)| *a),
            clock_identity: identity,
        };
        for (i, (worker, commands)) in workers.into_iter().enumerate() {
            let stop = stop.clone();
            server.threads.push(
                std::thread::Builder::new()
                    .name(format!("ptp-send-{i}"))
                    .spawn(move || worker.run(&commands, &stop))
                    .map_err(sock_err(format!("worker {i} thread")))?,
            );
        }
        let receivers = event_group
            .into_iter()
            .map(|s| (s, true))
            .chain(general_group.into_iter().map(|s| (s, false)));
        for (i, (sock, event)) in receivers.enumerate() {
            let shared = rx.clone();
            let name = format!("ptp-recv-{}-{i}", if event { "event" } else { "general" });
            server.threads.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || {
                        if event {
                            run_event(&sock, &shared);
                        } else {
                            run_general(&sock, &shared);
                        }
                    })
                    .map_err(sock_err("receive thread".into()))?,
            );
        }
        if let Some((l, _)) = monitor {
            server.threads.push(
                crate::monitor::spawn(l, stats.clone(), stop.clone())
                    .map_err(sock_err("monitor thread".into()))?,
            );
        }

        // Control loop: drain files, served-quality gauges.
        {
            let (rx, stop, time, stats) = (rx.clone(), stop.clone(), time.clone(), stats.clone());
            let (drain_file, undrain_file) =
                (config.drain_file.clone(), config.undrain_file.clone());
            server.threads.push(
                std::thread::Builder::new()
                    .name("ptp-control".into())
                    .spawn(move || {
                        let mut file_drained = false;
                        while !stop.load(Ordering::Relaxed) {
                            stats.record_served(time.served());
                            let want = drain_file.as_deref().is_some_and(Path::exists)
                                && !undrain_file.as_deref().is_some_and(Path::exists);
                            if want != file_drained {
                                file_drained = want;
                                set_draining(&rx, &stats, want);
                            }
                            std::thread::sleep(Duration::from_millis(250));
                        }
                    })
                    .map_err(sock_err("control thread".into()))?,
            );
        }
        info!(%event_addr, %general_addr, identity = %identity, "ptp-server serving");
        Ok(server)
    }

    /// Statistics.
    #[must_use]
    pub fn stats(&self) -> Arc<Stats> {
        self.rx.stats.clone()
    }

    /// Event port address actually bound.
    #[must_use]
    pub fn event_addr(&self) -> SocketAddr {
        self.event_addr
    }

    /// General port address actually bound.
    #[must_use]
    pub fn general_addr(&self) -> SocketAddr {
        self.general_addr
    }

    /// Monitoring address, if enabled.
    #[must_use]
    pub fn monitor_addr(&self) -> Option<SocketAddr> {
        self.monitor_addr
    }

    /// Our clock identity.
    #[must_use]
    pub fn clock_identity(&self) -> ClockIdentity {
        self.clock_identity
    }

    /// Starts draining: every stream is cancelled (clients are told), new
    /// requests are refused and Delay_Req ignored until [`Server::undrain`].
    pub fn drain(&self) {
        set_draining(&self.rx, &self.rx.stats, true);
    }

    /// Serves again after a drain.
    pub fn undrain(&self) {
        set_draining(&self.rx, &self.rx.stats, false);
    }

    /// Graceful shutdown: cancels every subscription (clients receive CANCEL),
    /// then stops all threads.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.rx.draining.store(true, Ordering::Relaxed);
        self.rx.stop.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        for q in &self.rx.workers {
            let _ = q.send(Command::CancelAll);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop_all();
        }
    }
}

fn set_draining(rx: &RxShared, stats: &Stats, on: bool) {
    let was = rx.draining.swap(on, Ordering::Relaxed);
    stats.draining.store(u64::from(on), Ordering::Relaxed);
    if on && !was {
        info!("draining: cancelling every subscription");
        for q in &rx.workers {
            let _ = q.send(Command::CancelAll);
        }
    }
}
