//! fbclockd over SPTP against our `ptp-server`, on 127.0.0.1.
//!
//! The server runs in this process (the same code as the `ptp-server`
//! binary: embedded simulated Time Card → driver → card source → server), so
//! it can be stopped and restarted on the same ports. The simulated card is
//! anchored to the host clock: once locked its time is host
//! `CLOCK_REALTIME` + 37 s within a few µs, which is the truth every
//! published interval must contain.
//!
//! Every wait is bounded; each test stays under 60 s.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fbclock::layout::FLAG_HOLDOVER;
use fbclock::{FbClock, TrueTime};
use fbclockd::status::{StatusSource, SyncState};
use fbclockd::{Config, Daemon, DriftingClock, LocalClock, Mode};
use ptp_proto::Flags;
use ptp_server::config::Config as ServerConfig;
use ptp_server::quality::{QualityConfig, Served};
use ptp_server::{CardSource, Server, TimeSource};

const TAI_UTC_NS: i64 = 37_000_000_000;
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn realtime_ns() -> i64 {
    fbclock::clock_ns(libc::CLOCK_REALTIME as u32)
}

fn server_config(event_port: u16, general_port: u16) -> ServerConfig {
    ServerConfig {
        ip: LOCALHOST,
        event_port,
        general_port,
        monitoring: None,
        quality_window: 3,
        workers: 2,
        recv_workers: 1,
        ..ServerConfig::default()
    }
}

/// Checks one reading against host TAI bracketed by two realtime reads.
#[track_caller]
fn assert_contains(tt: &TrueTime, rt_before: i64, rt_after: i64, what: &str) {
    let (lo, hi) = (rt_before + TAI_UTC_NS, rt_after + TAI_UTC_NS);
    assert!(
        tt.earliest_ns <= hi && tt.latest_ns >= lo,
        "{what}: host TAI [{lo}, {hi}] outside [{}, {}] (midpoint off by {} ns, WOU {} ns)",
        tt.earliest_ns,
        tt.latest_ns,
        tt.midpoint_ns() - (lo + hi) / 2,
        tt.wou_ns()
    );
}

/// Reads `clock.now()` bracketed by realtime and checks it; returns the
/// reading (or the error).
#[track_caller]
fn read_checked(clock: &FbClock, what: &str) -> Result<TrueTime, fbclock::Error> {
    let before = realtime_ns();
    let tt = clock.now();
    let after = realtime_ns();
    if let Ok(tt) = &tt {
        assert_contains(tt, before, after, what);
    }
    tt
}

/// Kills the child on drop (a failed assertion must not leave it running).
struct DaemonProcess(Child);

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Scrapes the daemon's `/metrics` (address from its log) while it is synced.
fn check_metrics(log: &Path) {
    use std::io::{Read as _, Write as _};
    let logged = std::fs::read_to_string(log).unwrap();
    let addr = logged
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{logged}"));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("timecard_fbclockd_sync_state{state=\"synced\"}"), 1.0);
    assert_eq!(
        value("timecard_fbclockd_sync_state{state=\"holdover\"}"),
        0.0
    );
    let wou = value("timecard_fbclockd_window_of_uncertainty_seconds");
    assert!(wou > 0.0 && wou < 200e-6, "{wou}");
    assert!(value("timecard_fbclockd_exchanges_total{result=\"accepted\"}") >= 2.0);
    assert!(value("timecard_fbclockd_shm_writes_total") >= 100.0);
    assert!(value("timecard_fbclockd_path_delay_seconds").abs() < 0.01);
    assert!(value("timecard_fbclockd_received_packets_total") > 0.0);
    assert!(value("timecard_fbclockd_grandmaster_clock_class") > 0.0);
    assert!(
        body.contains(&format!(
            "timecard_build_info{{daemon=\"fbclockd\",version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
}

/// Asks the daemon's gRPC API (address from its log) for TrueTime, which
/// must contain host TAI, and for its status, which must say synced.
fn check_grpc(log: &Path) {
    use fbclockd::grpc::{FbClockClient, pb};
    let logged = std::fs::read_to_string(log).unwrap();
    let addr = logged
        .split("gRPC API listening addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no gRPC address in the log:\n{logged}"))
        .to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = FbClockClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        for i in 0..100 {
            let before = realtime_ns();
            let tt = c
                .get_time(pb::GetTimeRequest::default())
                .await
                .unwrap()
                .into_inner();
            let after = realtime_ns();
            assert_eq!(tt.wou_ns, tt.latest_ns - tt.earliest_ns);
            let tt = TrueTime {
                earliest_ns: tt.earliest_ns,
                latest_ns: tt.latest_ns,
            };
            assert_contains(&tt, before, after, &format!("gRPC GetTime {i}"));
        }
        let st = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(st.state(), pb::SyncState::Synced, "{st:?}");
        assert!(st.exchanges.is_some_and(|e| e.accepted >= 2), "{st:?}");
    });
}

/// Test (a): the `fbclockd` binary, SPTP, against the simulated card served
/// by ptp-server (shared memory, metrics and gRPC); then the server goes away (holdover) and comes back.
#[test]
fn fbclockd_binary_over_sptp_against_ptp_server_with_the_simulated_card() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("fbclock");
    let log = dir.path().join("fbclockd.log");

    let sim = timecard_sim::Sim::new(&timecard_sim::SimConfig {
        mode: timecard_sim::ClockMode::Realtime { acceleration: 1.0 },
        ..timecard_sim::SimConfig::default()
    })
    .unwrap();
    let card = timecard_driver::device::open_sim(sim).unwrap();
    card.init(timecard_driver::InitOptions::default()).unwrap();
    let source = CardSource::spawn(
        Arc::new(card),
        Some(timecard_driver::supervisor::Supervisor::new()),
        QualityConfig {
            window: 3,
            ..QualityConfig::default()
        },
    );
    let server = Server::start(&server_config(0, 0), source.source()).unwrap();
    let (event_port, general_port) = (server.event_addr().port(), server.general_addr().port());

    let child = Command::new(env!("CARGO_BIN_EXE_fbclockd"))
        .args(["--server", &format!("127.0.0.1:{event_port}")])
        .args(["--general-port", &general_port.to_string()])
        .args(["--shm", shm.to_str().unwrap()])
        .args(["--interval", "250ms", "--local-ip", "127.0.0.1"])
        .args(["--log-level", "fbclockd=debug", "--metrics", "127.0.0.1:0"])
        .args(["--grpc", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = DaemonProcess(child);

    // The file appears at once; data once the card locked (~7 s) and two
    // exchanges were accepted. Every reading ever returned must hold.
    let clock = loop {
        if let Ok(c) = FbClock::open(&shm) {
            break c;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no shm file");
        std::thread::sleep(Duration::from_millis(20));
    };
    let synced_at = loop {
        if read_checked(&clock, "first sync").is_ok() {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(25),
            "never synced; daemon log:\n{}",
            log_tail(&log)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let (gm, class, accuracy) = clock.grandmaster();
    eprintln!(
        "synced after {synced_at:?}; GM {:016x} class {class} accuracy {accuracy:#04x}",
        gm
    );
    assert_eq!(gm, server.clock_identity().to_u64());

    // Converge: the rate window fills; wait for a WOU below 200 µs.
    let mut wou = i64::MAX;
    while wou >= 200_000 {
        if let Ok(tt) = read_checked(&clock, "converging") {
            wou = tt.wou_ns();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(35),
            "WOU still {wou} ns; log:\n{}",
            log_tail(&log)
        );
        std::thread::sleep(Duration::from_millis(2));
    }

    // 1000 consecutive reads: all contain host TAI, all below 200 µs.
    let mut wous = Vec::with_capacity(1000);
    for i in 0..1000 {
        let tt = read_checked(&clock, &format!("read {i}")).expect("synced reads");
        wous.push(tt.wou_ns());
        std::thread::sleep(Duration::from_micros(500));
    }
    wous.sort_unstable();
    eprintln!(
        "1000 reads over loopback: WOU min {} / median {} / p99 {} / max {} ns",
        wous[0], wous[500], wous[990], wous[999]
    );
    assert!(wous[999] < 200_000, "max WOU {} ns", wous[999]);
    let snap = clock.snapshot().unwrap();
    eprintln!("record: {snap:?}");
    check_metrics(&log);
    check_grpc(&log);

    // Server gone: the bound grows at ≥ max_drift (20 µs/s per side) and
    // still contains host TAI.
    server.shutdown();
    let gone = Instant::now();
    let mut first: Option<(Instant, i64)> = None;
    let mut last = (gone, 0);
    while gone.elapsed() < Duration::from_secs(3) {
        let tt = read_checked(&clock, "holdover").expect("holdover reads");
        let now = Instant::now();
        if now - gone > Duration::from_millis(300) && first.is_none() {
            first = Some((now, tt.wou_ns()));
        }
        last = (now, tt.wou_ns());
        std::thread::sleep(Duration::from_millis(1));
    }
    let (t1, w1) = first.unwrap();
    let per_side_ns_per_s = (last.1 - w1) as f64 / 2.0 / (last.0 - t1).as_secs_f64();
    let snap = clock.snapshot().unwrap();
    eprintln!(
        "holdover: WOU {w1} → {} ns, growth {per_side_ns_per_s:.0} ns/s per side (published {:.0})",
        last.1, snap.holdover_ns_per_s
    );
    assert!(snap.flags & FLAG_HOLDOVER != 0, "{snap:?}");
    assert!(snap.holdover_ns_per_s >= 20_000.0);
    assert!(per_side_ns_per_s >= 20_000.0 * 0.99, "{per_side_ns_per_s}");

    // Server back on the same ports: the bound shrinks again.
    let server = Server::start(&server_config(event_port, general_port), source.source()).unwrap();
    let back = Instant::now();
    loop {
        let tt = read_checked(&clock, "recovery").expect("recovery reads");
        if tt.wou_ns() < 200_000 && clock.snapshot().unwrap().flags & FLAG_HOLDOVER == 0 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "did not recover: {tt:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!("recovered {:?} after the restart", back.elapsed());
    for i in 0..200 {
        read_checked(&clock, &format!("after recovery {i}")).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }

    // SIGTERM: a graceful stop.
    let pid = daemon.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stop = Instant::now();
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            stop.elapsed() < Duration::from_secs(5),
            "fbclockd ignores SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}\n{}", log_tail(&log));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("synced"), "{logged}");
    server.shutdown();
    drop(source);
    eprintln!("total {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(60));
}

/// A time source whose card is host `CLOCK_REALTIME` + 37 s, locked.
#[derive(Debug)]
struct FakeCard;

impl TimeSource for FakeCard {
    fn card_time(&self, host_ns: i64) -> Option<i64> {
        Some(host_ns + TAI_UTC_NS)
    }
    fn served(&self) -> Served {
        Served {
            clock_class: 6,
            clock_accuracy: 0x21,
            offset_scaled_log_variance: 0x59E0,
            utc_offset_s: 37,
            flags: Flags::PTP_TIMESCALE
                | Flags::CURRENT_UTC_OFFSET_VALID
                | Flags::TIME_TRACEABLE
                | Flags::FREQUENCY_TRACEABLE,
        }
    }
    fn host_now_ns(&self) -> i64 {
        realtime_ns()
    }
}

/// Two simulated hosts in this process, each with its own drifting
/// oscillator, against one server; one host's frequency steps by 18 ppm
/// (within the assumed 20 ppm) mid-run. Every reading of every host must
/// contain host TAI.
#[test]
fn simulated_hosts_with_drifting_oscillators_stay_inside() {
    let t0 = Instant::now();
    let server = Server::start(&server_config(0, 0), Arc::new(FakeCard)).unwrap();
    let server_addr = SocketAddr::new(LOCALHOST, server.event_addr().port());
    let hosts: Vec<(DriftingClock, fbclockd::DaemonHandle)> =
        [(40e-6, 3_000_000_000i64), (-30e-6, -7_000_000_000)]
            .into_iter()
            .enumerate()
            .map(|(i, (f, phase))| {
                let clock = DriftingClock::new(f, phase);
                let mut c = Config::new(Mode::Sptp, server_addr);
                c.transport.local_ip = Some(LOCALHOST);
                c.transport.port_identity.port_number = 0x100 + i as u16;
                c.interval = Duration::from_millis(250);
                let publisher = fbclock::Publisher::in_memory(clock.clock_id());
                let h = Daemon::spawn(c, Arc::new(clock.clone()), publisher).unwrap();
                (clock, h)
            })
            .collect();
    let readers: Vec<FbClock> = hosts.iter().map(|(_, h)| h.client()).collect();
    let wous = Mutex::new(vec![Vec::new(); hosts.len()]);
    let read_all = |what: &str| {
        for (i, ((clock, _), r)) in hosts.iter().zip(&readers).enumerate() {
            let before = realtime_ns();
            let t = clock.now_ns();
            let after = realtime_ns();
            if let Ok(tt) = r.at(t) {
                assert_contains(&tt, before, after, &format!("host {i} {what}"));
                wous.lock().unwrap()[i].push(tt.wou_ns());
            }
        }
    };
    let run_for = |d: Duration, what: &str| {
        let end = Instant::now() + d;
        while Instant::now() < end {
            read_all(what);
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // Sync.
    loop {
        read_all("sync");
        if hosts
            .iter()
            .all(|(_, h)| h.status().state == SyncState::Synced)
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "not synced: {:?}",
            hosts.iter().map(|h| h.1.status()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    run_for(Duration::from_secs(4), "steady");
    // The first host's oscillator warms up: +18 ppm.
    hosts[0].0.handle().set_frequency_offset(58e-6);
    run_for(Duration::from_secs(5), "after the frequency step");
    // A loaded machine can delay a few loopback exchanges enough for the
    // spike filter to reject them and a host to enter holdover for a moment
    // (its readings still checked above); each must come back to Synced.
    let recover_by = Instant::now() + Duration::from_secs(5);
    let statuses = loop {
        let statuses: Vec<_> = hosts.iter().map(|(_, h)| h.status()).collect();
        if statuses.iter().all(|s| s.state == SyncState::Synced) || Instant::now() > recover_by {
            break statuses;
        }
        run_for(Duration::from_millis(50), "recovering");
    };
    for (i, ((_, h), st)) in hosts.iter().zip(statuses).enumerate() {
        let w = &wous.lock().unwrap()[i];
        let max = w.iter().max().copied().unwrap_or(0);
        eprintln!(
            "host {i}: {:?}, {} reads, max WOU {max} ns, {:?}, resets {}",
            st.state,
            w.len(),
            st.exchanges,
            h.model_resets()
        );
        assert_eq!(st.state, SyncState::Synced);
        assert!(w.len() > 1000);
        assert_eq!(h.model_resets(), 0);
        assert!(st.exchanges.accepted > 20, "{:?}", st.exchanges);
        assert!(st.gm_identity.is_some());
    }
    for (_, h) in hosts {
        h.stop();
    }
    server.shutdown();
    assert!(t0.elapsed() < Duration::from_secs(60));
}

/// Negotiated unicast (the ptp4l mode) against our ptp-server, which also
/// speaks it: grants, renewal at half the duration, Sync/Follow_Up pairing,
/// Delay_Req/Delay_Resp — all over loopback without root (the server is told
/// our event port, as ptp4l would use 319).
#[test]
fn unicast_transport_negotiates_and_renews_against_ptp_server() {
    use fbclockd::client::{Outcome, Transport, TransportConfig, UnicastClient};
    use fbclockd::estimator::{Estimator, EstimatorConfig, Verdict};
    use ptp_proto::{ClockIdentity, PortIdentity};

    let t0 = Instant::now();
    let clock = Arc::new(fbclockd::SystemClock);
    // The server's ports first (ephemeral), then ours, then the server
    // again on the same ports but told where our event socket is.
    let probe = Server::start(&server_config(0, 0), Arc::new(FakeCard)).unwrap();
    let (ep, gp) = (probe.event_addr().port(), probe.general_addr().port());
    probe.shutdown();
    let mut client = UnicastClient::open(
        TransportConfig {
            server: SocketAddr::new(LOCALHOST, ep),
            server_general_port: gp,
            local_ip: Some(LOCALHOST),
            local_event_port: 0,
            local_general_port: Some(0),
            port_identity: PortIdentity::new(ClockIdentity::from_u64(0x0200_00ff_fe00_0001), 1),
            domain: 0,
            log_interval: -3,
            unicast_duration_s: 4,
            response_timeout: Duration::from_millis(200),
        },
        clock.clone(),
    )
    .unwrap();
    let mut sc = server_config(ep, gp);
    sc.client_event_port = client.local_event_addr().unwrap().port();
    let server = Server::start(&sc, Arc::new(FakeCard)).unwrap();
    let mut est = Estimator::new(EstimatorConfig {
        interval_ns: 125_000_000,
        ..EstimatorConfig::default()
    });
    let publisher = fbclock::Publisher::in_memory(clock.clock_id());
    let reader = publisher.client();
    let mut accepted = 0;
    // 6 s: more than one renewal of the 4 s grants.
    while t0.elapsed() < Duration::from_secs(6) {
        match client.exchange(Duration::from_millis(500), &AtomicBool::new(false)) {
            Outcome::Complete(x) => match est.feed(&x) {
                Verdict::Accepted { .. } => accepted += 1,
                Verdict::Rejected(r) => eprintln!("rejected: {r}"),
            },
            Outcome::Lost(_) => est.lost(),
        }
        publisher.publish(&est.snapshot(clock.now_ns()));
        let before = realtime_ns();
        if let Ok(tt) = reader.now() {
            assert_contains(&tt, before, realtime_ns(), "unicast");
        }
    }
    let stats = client.counters().snapshot();
    eprintln!("unicast: {:?}, {stats:?}", est.counters());
    assert!(client.granted());
    // 3 streams, granted at least twice each (first grant + renewal).
    assert!(stats.grants >= 6, "{stats:?}");
    assert!(accepted > 30, "{:?}", est.counters());
    assert!(reader.now().is_ok());
    server.shutdown();
}
