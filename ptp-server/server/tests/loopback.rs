//! The whole server over 127.0.0.1: receive and send workers, negotiation,
//! streams, Delay_Req, SPTP, cancel/expiry, live clock quality (fake source
//! and the real simulator through the driver), drain/shutdown, hostile input
//! and monitoring.
//!
//! The test client builds its packets with `ptp_proto` and listens on two
//! sockets of its own: an "event" socket (the server is configured with
//! `client_event_port` = its port, since Sync goes to client-IP:that-port)
//! with kernel RX timestamps, as a real client's T2, and a "general" socket
//! from which it negotiates (grants, Follow_Up, Announce, Delay_Resp and
//! CANCEL come back to it). Every wait is bounded.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ptp_proto::{
    Body, CancelUnicastTransmission, ClockIdentity, Flags, GrantUnicastTransmission, Message,
    MessageType, PortIdentity, RequestUnicastTransmission, TimeInterval, TimeSource as PtpSource,
    Timestamp, TypedTlv, parse, write_with_tlvs,
};
use ptp_server::config::Config;
use ptp_server::net::{PtpSocket, SocketOptions, TimestampMode};
use ptp_server::quality::{QualityConfig, Served};
use ptp_server::{CardSource, Server, TimeSource};

const TAI_UTC_NS: i64 = 37_000_000_000;
const MS: i64 = 1_000_000;
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn realtime_ns() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos(),
    )
    .expect("fits i64")
}

// ---------------------------------------------------------------------------
// A fake time source: card = CLOCK_REALTIME + 37 s, quality set by the test.

#[derive(Debug)]
struct FakeTime {
    served: Mutex<Served>,
    /// False: the card's time is unavailable (stale map, unreadable card).
    available: AtomicBool,
}

fn locked_quality() -> Served {
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

impl FakeTime {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            served: Mutex::new(locked_quality()),
            available: AtomicBool::new(true),
        })
    }

    fn set(&self, s: Served) {
        *self.served.lock().unwrap() = s;
    }
}

impl TimeSource for FakeTime {
    fn card_time(&self, host_ns: i64) -> Option<i64> {
        self.available
            .load(Ordering::Relaxed)
            .then_some(host_ns + TAI_UTC_NS)
    }
    fn served(&self) -> Served {
        *self.served.lock().unwrap()
    }
    fn host_now_ns(&self) -> i64 {
        realtime_ns()
    }
}

// ---------------------------------------------------------------------------
// Receiving.

/// One datagram a client socket received.
#[derive(Clone, Debug)]
struct Rx {
    /// When the test thread got it.
    at: Instant,
    /// Kernel RX timestamp (CLOCK_REALTIME ns), event socket only.
    rx_ns: Option<i64>,
    from: SocketAddr,
    data: Vec<u8>,
}

impl Rx {
    /// The message; the server must never send anything that does not parse.
    fn msg(&self) -> Message<'_> {
        parse(&self.data).unwrap_or_else(|e| {
            panic!(
                "server sent a malformed packet from {} ({e}): {:02x?}",
                self.from, self.data
            )
        })
    }

    fn is(&self, t: MessageType) -> bool {
        self.msg().message_type() == t
    }

    fn seq(&self) -> u16 {
        self.msg().header.sequence_id
    }
}

/// Receives one datagram before `deadline`.
fn recv_until(sock: &PtpSocket, deadline: Instant) -> Option<Rx> {
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left.min(Duration::from_millis(100))))
            .unwrap();
        match sock.recv(&mut buf) {
            Ok(r) => {
                return Some(Rx {
                    at: Instant::now(),
                    rx_ns: r.timestamp_ns,
                    from: r.from,
                    data: buf[..r.len].to_vec(),
                });
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Everything received within `d`.
fn collect(sock: &PtpSocket, d: Duration) -> Vec<Rx> {
    let deadline = Instant::now() + d;
    std::iter::from_fn(|| recv_until(sock, deadline)).collect()
}

/// The first received datagram for which `f` returns `Some`, within `timeout`.
fn wait_for<T>(
    sock: &PtpSocket,
    timeout: Duration,
    mut f: impl FnMut(&Rx, &Message<'_>) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    while let Some(rx) = recv_until(sock, deadline) {
        if let Some(v) = f(&rx, &rx.msg()) {
            return Some(v);
        }
    }
    None
}

fn grants(m: &Message<'_>) -> Vec<GrantUnicastTransmission> {
    m.tlvs
        .iter()
        .filter_map(|t| match t.typed() {
            Ok(TypedTlv::Grant(g)) => Some(g),
            _ => None,
        })
        .collect()
}

fn cancels(m: &Message<'_>) -> Vec<MessageType> {
    m.tlvs
        .iter()
        .filter_map(|t| match t.typed() {
            Ok(TypedTlv::Cancel(c)) => Some(c.message_type),
            _ => None,
        })
        .collect()
}

fn acks(m: &Message<'_>) -> Vec<MessageType> {
    m.tlvs
        .iter()
        .filter_map(|t| match t.typed() {
            Ok(TypedTlv::AckCancel(c)) => Some(c.message_type),
            _ => None,
        })
        .collect()
}

fn target(m: &Message<'_>) -> PortIdentity {
    match m.body {
        Body::Signaling(s) => s.target_port_identity,
        other => panic!("not a Signaling body: {other:?}"),
    }
}

/// The body timestamp (origin / preciseOrigin / receive), ns.
fn body_ts(m: &Message<'_>) -> i64 {
    let t = match m.body {
        Body::Sync(b) => b.origin_timestamp,
        Body::FollowUp(b) => b.precise_origin_timestamp,
        Body::DelayResp(b) => b.receive_timestamp,
        Body::Announce(b) => b.origin_timestamp,
        other => panic!("no timestamp in {other:?}"),
    };
    i64::try_from(t.to_nanos()).unwrap()
}

// ---------------------------------------------------------------------------
// The client.

struct Client {
    id: PortIdentity,
    event: PtpSocket,
    general: PtpSocket,
    seq: u16,
}

fn req(t: MessageType, log: i8, duration_s: u32) -> RequestUnicastTransmission {
    RequestUnicastTransmission {
        message_type: t,
        log_inter_message_period: log,
        duration_s,
    }
}

impl Client {
    fn new(tag: u8, port_number: u16) -> Self {
        let any = SocketAddr::new(LOCALHOST, 0);
        let event = PtpSocket::bind(
            any,
            &SocketOptions {
                timestamping: Some(TimestampMode::Software),
                recv_buffer: Some(4 << 20),
                ..SocketOptions::default()
            },
        )
        .unwrap();
        let general = PtpSocket::bind(
            any,
            &SocketOptions {
                recv_buffer: Some(4 << 20),
                ..SocketOptions::default()
            },
        )
        .unwrap();
        Self {
            id: PortIdentity::new(
                ClockIdentity([0x02, 0xaa, tag, 0xff, 0xfe, 0, 0, tag]),
                port_number,
            ),
            event,
            general,
            seq: 100,
        }
    }

    fn event_port(&self) -> u16 {
        self.event.local_addr().unwrap().port()
    }

    fn next_seq(&mut self) -> u16 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one Signaling message with `tlvs` from the general socket.
    fn signal(&mut self, to: SocketAddr, tlvs: &[TypedTlv<'_>]) -> u16 {
        let seq = self.next_seq();
        let msg = Message::signaling(self.id, seq, PortIdentity::ALL_ONES);
        let mut buf = [0u8; 1500];
        let n = write_with_tlvs(&mut buf, &msg, tlvs).unwrap();
        self.general.send_to(&buf[..n], to).unwrap();
        seq
    }

    fn request(&mut self, to: SocketAddr, reqs: &[RequestUnicastTransmission]) -> u16 {
        let tlvs: Vec<TypedTlv<'_>> = reqs.iter().map(|r| TypedTlv::Request(*r)).collect();
        self.signal(to, &tlvs)
    }

    /// Waits for the server's Signaling reply to our message `seq` (from the
    /// general port, to us, carrying grants or acknowledgements).
    fn reply(&self, server: &Server, seq: u16) -> Rx {
        wait_for(&self.general, Duration::from_secs(2), |rx, m| {
            (m.message_type() == MessageType::Signaling
                && rx.from == server.general_addr()
                && m.header.sequence_id == seq
                && target(m) == self.id)
                .then(|| rx.clone())
        })
        .unwrap_or_else(|| panic!("no Signaling reply to sequence {seq}"))
    }

    /// Negotiates and returns the grants of the reply.
    fn negotiate(
        &mut self,
        server: &Server,
        reqs: &[RequestUnicastTransmission],
    ) -> Vec<GrantUnicastTransmission> {
        let seq = self.request(server.general_addr(), reqs);
        let rx = self.reply(server, seq);
        grants(&rx.msg())
    }

    fn send_event(&self, msg: &Message<'_>, to: SocketAddr) {
        let mut buf = [0u8; 128];
        let n = msg.write(&mut buf).unwrap();
        self.event.send_to(&buf[..n], to).unwrap();
    }
}

// ---------------------------------------------------------------------------
// The server.

struct Harness {
    server: Server,
    time: Arc<FakeTime>,
    client: Client,
}

fn base_config(client_event_port: u16) -> Config {
    Config {
        ip: LOCALHOST,
        event_port: 0,
        general_port: 0,
        client_event_port,
        monitoring: Some("127.0.0.1:0".into()),
        quality_window: 5,
        max_duration_s: 600,
        clock_identity: Some("3cfdfe.fffe.00a0b0".into()),
        workers: 2,
        recv_workers: 2,
        queue: 4096,
        ..Config::default()
    }
}

fn start(tweak: impl FnOnce(&mut Config)) -> Harness {
    let client = Client::new(1, 1);
    let mut config = base_config(client.event_port());
    tweak(&mut config);
    let time = FakeTime::new();
    let server = Server::start(&config, time.clone()).expect("server starts");
    assert_ne!(server.event_addr().port(), 0);
    assert_ne!(server.general_addr().port(), 0);
    Harness {
        server,
        time,
        client,
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, head.to_string(), body.to_string())
}

fn stats(server: &Server) -> BTreeMap<String, i64> {
    let (status, head, body) = http_get(server.monitor_addr().expect("monitoring on"), "/");
    assert_eq!(status, 200, "{head}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad JSON ({e}): {body}"))
}

fn stat(server: &Server, key: &str) -> i64 {
    *stats(server)
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in the stats"))
}

/// Polls `f` every 50 ms until it is true or `timeout` passes.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn total_subscriptions(s: &BTreeMap<String, i64>) -> i64 {
    ["announce", "sync", "delay_resp"]
        .iter()
        .map(|t| s[&format!("subscriptions.{t}")])
        .sum()
}

// ---------------------------------------------------------------------------
// 1. Negotiation.

#[test]
fn negotiation_grants_as_linuxptp_expects() {
    let mut h = start(|_| {});
    let server = &h.server;
    let me = PortIdentity::new(server.clock_identity(), 1);
    let c = &mut h.client;

    // One request per Signaling message, as ptp4l sends them.
    for r in [
        req(MessageType::Announce, 1, 60),
        req(MessageType::Sync, -2, 60),
        req(MessageType::DelayResp, -2, 60),
    ] {
        let seq = c.request(server.general_addr(), &[r]);
        let rx = c.reply(server, seq);
        let m = rx.msg();
        assert_eq!(
            rx.from,
            server.general_addr(),
            "grant from the general port"
        );
        assert_eq!(m.header.sequence_id, seq);
        assert_eq!(m.header.source_port_identity, me);
        assert_eq!(m.header.domain_number, 0);
        assert!(m.header.flags.contains(Flags::UNICAST));
        assert_eq!(target(&m), c.id, "targets the requester");
        let g = grants(&m);
        assert_eq!(g.len(), 1, "{g:?}");
        assert_eq!(
            (
                g[0].message_type,
                g[0].log_inter_message_period,
                g[0].duration_s
            ),
            (r.message_type, r.log_inter_message_period, 60)
        );
    }

    // Refusals: a grant with duration 0 echoing type and interval.
    for r in [
        req(MessageType::Sync, -9, 60),
        req(MessageType::Management, 0, 60),
    ] {
        let g = c.negotiate(server, &[r]);
        assert_eq!(g.len(), 1, "{g:?}");
        assert_eq!(
            (
                g[0].message_type,
                g[0].log_inter_message_period,
                g[0].duration_s
            ),
            (r.message_type, r.log_inter_message_period, 0),
            "refused {r:?}"
        );
    }

    // Too long: granted at the maximum.
    let g = c.negotiate(server, &[req(MessageType::Announce, 1, 100_000)]);
    assert_eq!(g[0].duration_s, 600, "{g:?}");
    assert_eq!(g[0].log_inter_message_period, 1);

    // Several requests in one message: one grant each, in order.
    let all = [
        req(MessageType::Announce, 0, 30),
        req(MessageType::Sync, -3, 30),
        req(MessageType::DelayResp, -3, 30),
    ];
    let g = c.negotiate(server, &all);
    assert_eq!(
        g.iter()
            .map(|g| (g.message_type, g.log_inter_message_period, g.duration_s))
            .collect::<Vec<_>>(),
        all.iter()
            .map(|r| (r.message_type, r.log_inter_message_period, r.duration_s))
            .collect::<Vec<_>>()
    );
    // Three streams, however often renewed; refusals hold nothing.
    assert!(eventually(Duration::from_secs(2), || {
        let s = stats(server);
        total_subscriptions(&s) == 3 && s["subscriptions.total"] == 3
    }));
}

// ---------------------------------------------------------------------------
// 2. Sync + Follow_Up and Announce streams.

#[test]
fn streams_carry_two_step_sync_and_announce() {
    let mut h = start(|_| {});
    let server = &h.server;
    let c = &mut h.client;
    let seq = c.request(
        server.general_addr(),
        &[
            req(MessageType::Announce, 1, 60),
            req(MessageType::Sync, -2, 60),
        ],
    );
    let window = Duration::from_millis(2600);
    let (events, generals) = std::thread::scope(|s| {
        let e = s.spawn(|| collect(&c.event, window));
        let g = s.spawn(|| collect(&c.general, window));
        (e.join().unwrap(), g.join().unwrap())
    });

    let grant = generals
        .iter()
        .find(|r| r.is(MessageType::Signaling) && r.seq() == seq)
        .expect("grant");
    assert_eq!(grants(&grant.msg()).len(), 2);

    let me = PortIdentity::new(server.clock_identity(), 1);
    let syncs: Vec<&Rx> = events.iter().filter(|r| r.is(MessageType::Sync)).collect();
    assert_eq!(syncs.len(), events.len(), "only Sync on the event socket");
    assert!(
        (9..=12).contains(&syncs.len()),
        "~4 Sync/s for 2.6 s, got {}",
        syncs.len()
    );
    let first = syncs[0].seq();
    for (i, s) in syncs.iter().enumerate() {
        let m = s.msg();
        assert_eq!(s.from.ip(), LOCALHOST);
        assert_eq!(
            m.header.sequence_id,
            first.wrapping_add(i as u16),
            "Sync seq +1"
        );
        assert!(
            m.header.flags.contains(Flags::TWO_STEP | Flags::UNICAST),
            "{:?}",
            m.header.flags
        );
        assert_eq!(m.header.source_port_identity, me);
        assert_eq!(body_ts(&m), 0, "two-step Sync carries no time");
    }
    let span = syncs.last().unwrap().at - syncs[0].at;
    let mean = span / u32::try_from(syncs.len() - 1).unwrap();
    assert!(
        (Duration::from_millis(200)..Duration::from_millis(300)).contains(&mean),
        "Sync interval {mean:?}"
    );

    let follow_ups: Vec<&Rx> = generals
        .iter()
        .filter(|r| r.is(MessageType::FollowUp))
        .collect();
    let mut matched = 0;
    for s in &syncs {
        let Some(fu) = follow_ups.iter().find(|f| f.seq() == s.seq()) else {
            continue;
        };
        matched += 1;
        let m = fu.msg();
        assert_eq!(m.header.log_message_interval, -2);
        assert_eq!(m.header.control_field, 2);
        assert_eq!(m.header.source_port_identity, me);
        // T1 (server TX, card time) vs our kernel RX stamp of that Sync + 37 s.
        let d = body_ts(&m) - (s.rx_ns.expect("RX timestamp") + TAI_UTC_NS);
        assert!(
            d.abs() < 5 * MS,
            "Follow_Up {} is {d} ns from the Sync's arrival + 37 s",
            s.seq()
        );
        assert!(d <= 0, "sent after it arrived? {d} ns");
    }
    assert!(
        matched + 1 >= syncs.len(),
        "{matched} Follow_Ups for {} Syncs",
        syncs.len()
    );

    let announces: Vec<&Rx> = generals
        .iter()
        .filter(|r| r.is(MessageType::Announce))
        .collect();
    assert_eq!(announces.len(), 2, "one Announce per 2 s over 2.6 s");
    let first = announces[0].seq();
    for (i, a) in announces.iter().enumerate() {
        let m = a.msg();
        assert_eq!(m.header.sequence_id, first.wrapping_add(i as u16));
        assert_eq!(m.header.log_message_interval, 1);
        assert_eq!(m.header.control_field, 5);
        let served = locked_quality();
        assert_eq!(m.header.flags, Flags::UNICAST | served.flags);
        let Body::Announce(b) = m.body else {
            unreachable!()
        };
        assert_eq!(b.grandmaster_identity, server.clock_identity());
        assert_eq!(b.grandmaster_clock_quality.clock_class, 6);
        assert_eq!(b.grandmaster_clock_quality.clock_accuracy, 0x21);
        assert_eq!(
            b.grandmaster_clock_quality.offset_scaled_log_variance,
            0x59E0
        );
        assert_eq!(b.current_utc_offset, 37);
        assert_eq!(b.time_source, PtpSource::GNSS);
        assert_eq!(
            (b.grandmaster_priority1, b.grandmaster_priority2),
            (128, 128)
        );
        assert_eq!(b.steps_removed, 0);
        let now_tai = realtime_ns() + TAI_UTC_NS;
        assert!((now_tai - body_ts(&m)).abs() < 4_000 * MS);
    }
    assert!(generals.iter().all(|r| r.is(MessageType::Signaling)
        || r.is(MessageType::FollowUp)
        || r.is(MessageType::Announce)));
}

// ---------------------------------------------------------------------------
// 3. Delay_Req → Delay_Resp.

#[test]
fn delay_req_is_answered_only_with_a_subscription() {
    let mut h = start(|_| {});
    let server = &h.server;
    let c = &mut h.client;
    let g = c.negotiate(server, &[req(MessageType::DelayResp, -2, 60)]);
    assert_eq!(g[0].duration_s, 60);

    let mut dreq = Message::delay_req(c.id, 4242, Timestamp::ZERO);
    dreq.header.correction = TimeInterval::from_nanos(1234);
    let sent = realtime_ns();
    c.send_event(&dreq, server.event_addr());
    let resp = wait_for(&c.general, Duration::from_secs(2), |rx, m| {
        (m.message_type() == MessageType::DelayResp).then(|| rx.clone())
    })
    .expect("Delay_Resp");
    let after = realtime_ns();
    let m = resp.msg();
    assert_eq!(m.header.sequence_id, 4242);
    assert_eq!(m.header.correction, dreq.header.correction);
    assert_eq!(m.header.control_field, 3);
    assert_eq!(
        m.header.source_port_identity,
        PortIdentity::new(server.clock_identity(), 1)
    );
    let Body::DelayResp(b) = m.body else {
        unreachable!()
    };
    assert_eq!(b.requesting_port_identity, c.id);
    let t4 = body_ts(&m);
    assert!(
        (sent + TAI_UTC_NS..=after + TAI_UTC_NS).contains(&t4),
        "t4 {} ns after sending, {} ns before the reply",
        t4 - sent - TAI_UTC_NS,
        after + TAI_UTC_NS - t4
    );

    // Another client, no Delay_Resp subscription: nothing, but counted.
    let stranger = Client::new(2, 1);
    stranger.send_event(
        &Message::delay_req(stranger.id, 7, Timestamp::ZERO),
        server.event_addr(),
    );
    assert!(collect(&stranger.general, Duration::from_millis(500)).is_empty());
    assert!(collect(&stranger.event, Duration::from_millis(1)).is_empty());
    assert!(
        eventually(Duration::from_secs(2), || stat(
            server,
            "rx.delay_req.unsubscribed"
        ) == 1),
        "{:?}",
        stats(server)
    );
    assert_eq!(stat(server, "rx.delay_req"), 2);
    assert_eq!(stat(server, "tx.delay_resp"), 1);
}

// ---------------------------------------------------------------------------
// 4. SPTP.

#[test]
fn sptp_request_gets_sync_then_announce() {
    let h = start(|_| {});
    let server = &h.server;
    // portNumber > 10 (ptping-style): the Announce comes back to the source port.
    let c = Client::new(3, 11);
    let mut r = Message::sptp_delay_req(c.id, 31_000);
    r.header.correction = TimeInterval::from_nanos(5678);
    assert!(r.header.is_sptp_request());
    let sent = realtime_ns();
    c.send_event(&r, server.event_addr());
    let got = collect(&c.event, Duration::from_millis(600));
    let after = realtime_ns();
    let kinds: Vec<MessageType> = got.iter().map(|r| r.msg().message_type()).collect();
    assert_eq!(kinds, [MessageType::Sync, MessageType::Announce], "{got:?}");

    let sync = got[0].msg();
    assert_eq!(sync.header.sequence_id, 31_000);
    let t4 = body_ts(&sync);
    assert!(
        (sent + TAI_UTC_NS..=after + TAI_UTC_NS).contains(&t4),
        "T4 {} ns after sending",
        t4 - sent - TAI_UTC_NS
    );
    assert!(got[0].from.ip() == LOCALHOST);

    let ann = got[1].msg();
    assert_eq!(ann.header.correction, r.header.correction, "CF2 echoed");
    let t1 = body_ts(&ann);
    let sync_rx = got[0].rx_ns.unwrap() + TAI_UTC_NS;
    assert!(
        t4 <= t1 && t1 <= sync_rx,
        "T4 {t4} <= T1 {t1} <= T2 {sync_rx}"
    );
    let Body::Announce(b) = ann.body else {
        unreachable!()
    };
    assert_eq!(b.grandmaster_identity, server.clock_identity());
    assert_eq!(b.grandmaster_clock_quality.clock_class, 6);
    // Nothing on the general socket: no Follow_Up, no Delay_Resp.
    assert!(collect(&c.general, Duration::from_millis(100)).is_empty());
    assert!(eventually(Duration::from_secs(2), || stat(server, "sptp") == 1));
}

// ---------------------------------------------------------------------------
// 5. Cancel and expiry.

#[test]
fn cancel_stops_the_stream_and_is_acknowledged() {
    let mut h = start(|_| {});
    let server = &h.server;
    let c = &mut h.client;
    let g = c.negotiate(server, &[req(MessageType::Sync, -2, 60)]);
    assert_eq!(g[0].duration_s, 60);
    let mut n = 0;
    assert!(
        wait_for(&c.event, Duration::from_secs(2), |_, m| {
            n += usize::from(m.message_type() == MessageType::Sync);
            (n >= 2).then_some(())
        })
        .is_some()
    );
    let seq = c.signal(
        server.general_addr(),
        &[TypedTlv::Cancel(CancelUnicastTransmission::new(
            MessageType::Sync,
        ))],
    );
    let rx = c.reply(server, seq);
    let acked = Instant::now();
    assert_eq!(acks(&rx.msg()), [MessageType::Sync]);
    let late: Vec<Rx> = collect(&c.event, Duration::from_millis(1500))
        .into_iter()
        .filter(|r| r.at > acked + Duration::from_millis(1000))
        .collect();
    assert!(late.is_empty(), "Syncs after cancel: {late:?}");
    assert!(eventually(Duration::from_secs(2), || {
        let s = stats(server);
        s["subscriptions.sync"] == 0
            && s["subscriptions.total"] == 0
            && s["rx.signaling.cancel.sync"] == 1
    }));
}

#[test]
fn expired_grant_stops_silently_after_a_grace() {
    let mut h = start(|_| {});
    let server = &h.server;
    let c = &mut h.client;
    let granted = Instant::now();
    let g = c.negotiate(server, &[req(MessageType::Sync, -2, 2)]);
    assert_eq!(g[0].duration_s, 2);
    let window = Duration::from_millis(4500);
    let (events, generals) = std::thread::scope(|s| {
        let e = s.spawn(|| collect(&c.event, window));
        let g = s.spawn(|| collect(&c.general, window));
        (e.join().unwrap(), g.join().unwrap())
    });
    // Expiry is silent (as linuxptp's grantor): no CANCEL, the stream just ends.
    assert!(
        !generals
            .iter()
            .any(|r| r.is(MessageType::Signaling) && !cancels(&r.msg()).is_empty()),
        "no CANCEL on expiry"
    );
    let syncs: Vec<&Rx> = events.iter().filter(|r| r.is(MessageType::Sync)).collect();
    assert!(
        (11..=13).contains(&syncs.len()),
        "2 s grant + 1 s grace at 4/s: {} Syncs",
        syncs.len()
    );
    let last = syncs.last().expect("syncs").at - granted;
    assert!(
        (Duration::from_millis(2600)..Duration::from_millis(3400)).contains(&last),
        "last Sync {last:?} after the grant"
    );
}

// ---------------------------------------------------------------------------
// 6. Live clock quality.

fn announce_class(m: &Message<'_>) -> Option<u8> {
    match m.body {
        Body::Announce(b) => Some(b.grandmaster_clock_quality.clock_class),
        _ => None,
    }
}

#[test]
fn announces_follow_the_served_quality() {
    let mut h = start(|_| {});
    let server = &h.server;
    let c = &mut h.client;
    assert_eq!(
        c.negotiate(server, &[req(MessageType::Announce, -2, 60)])[0].duration_s,
        60
    );
    assert_eq!(
        wait_for(&c.general, Duration::from_secs(2), |_, m| announce_class(m)),
        Some(6)
    );
    h.time.set(Served {
        clock_class: 7,
        clock_accuracy: 0x23,
        utc_offset_s: 36,
        ..locked_quality()
    });
    let switched = wait_for(&c.general, Duration::from_secs(2), |_, m| {
        (announce_class(m) == Some(7)).then_some(())
    });
    assert!(switched.is_some(), "class 7 announced");
    let after = collect(&c.general, Duration::from_millis(800));
    assert!(after.len() >= 2);
    for a in &after {
        let m = a.msg();
        let Body::Announce(b) = m.body else { continue };
        assert_eq!(b.grandmaster_clock_quality.clock_class, 7);
        assert_eq!(b.grandmaster_clock_quality.clock_accuracy, 0x23);
        assert_eq!(b.current_utc_offset, 36);
    }
    assert!(eventually(Duration::from_secs(2), || stat(
        server,
        "clockclass"
    ) == 7));
}

#[test]
fn nothing_is_served_without_card_time() {
    let mut h = start(|_| {});
    let server = &h.server;
    let c = &mut h.client;
    let g = c.negotiate(
        server,
        &[
            req(MessageType::Announce, -2, 60),
            req(MessageType::Sync, -2, 60),
            req(MessageType::DelayResp, -2, 60),
        ],
    );
    assert!(g.iter().all(|g| g.duration_s == 60), "{g:?}");
    assert!(
        wait_for(&c.event, Duration::from_secs(2), |_, m| {
            (m.message_type() == MessageType::Sync).then_some(())
        })
        .is_some()
    );
    // The card's time goes stale: no Sync, Follow_Up, Announce, Delay_Resp
    // or SPTP answer carries a guess.
    h.time.available.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(100));
    let _ = collect(&c.event, Duration::from_millis(1));
    let _ = collect(&c.general, Duration::from_millis(1));
    c.send_event(
        &Message::delay_req(c.id, 9, Timestamp::ZERO),
        server.event_addr(),
    );
    c.send_event(&Message::sptp_delay_req(c.id, 10), server.event_addr());
    let (ev, ge) = std::thread::scope(|s| {
        let e = s.spawn(|| collect(&c.event, Duration::from_millis(700)));
        let g = s.spawn(|| collect(&c.general, Duration::from_millis(700)));
        (e.join().unwrap(), g.join().unwrap())
    });
    assert!(ev.is_empty(), "{ev:?}");
    assert!(ge.is_empty(), "{ge:?}");
    assert!(stat(server, "tx.no_card_time") >= 4);
    // Back: the streams resume.
    h.time.available.store(true, Ordering::Relaxed);
    assert!(
        wait_for(&c.general, Duration::from_secs(2), |_, m| {
            (m.message_type() == MessageType::FollowUp).then_some(())
        })
        .is_some()
    );
}

/// The simulator's truth (TAI) minus host CLOCK_REALTIME, from the tightest
/// of 50 back-to-back (realtime, truth, realtime) reads. In real-time mode
/// truth runs with the host clock, so this is a constant: truth at a kernel
/// RX timestamp `t` is `t + offset`, with no scheduling noise of the test's
/// threads in it.
fn truth_offset(sim: &timecard_sim::Sim) -> i64 {
    let mut best = (i64::MAX, 0);
    for _ in 0..50 {
        let a = realtime_ns();
        let t = sim.truth_tai_ns();
        let b = realtime_ns();
        if b - a < best.0 {
            best = (b - a, t - (a + (b - a) / 2));
        }
    }
    best.1
}

#[test]
fn simulator_lock_holdover_and_time_accuracy() {
    use timecard_driver::InitOptions;
    use timecard_driver::supervisor::Supervisor;
    use timecard_sim::{ClockMode, Fault, Sim, SimConfig};

    let sim = Sim::new(&SimConfig {
        mode: ClockMode::Realtime { acceleration: 1.0 },
        ..SimConfig::default()
    })
    .unwrap();
    let card = timecard_driver::device::open_sim(sim.clone()).unwrap();
    card.init(InitOptions::default()).unwrap();
    let source = CardSource::spawn(
        Arc::new(card),
        Some(Supervisor::new()),
        QualityConfig {
            window: 5,
            ..QualityConfig::default()
        },
    );
    let mut c = Client::new(4, 1);
    let server = Server::start(&base_config(c.event_port()), source.source()).unwrap();
    let g = c.negotiate(
        &server,
        &[
            req(MessageType::Announce, 0, 120),
            req(MessageType::Sync, -2, 120),
        ],
    );
    assert!(g.iter().all(|g| g.duration_s == 120), "{g:?}");
    let offset = truth_offset(&sim);

    // Sync arrivals (seq → truth at arrival), Follow_Ups (seq → T1) and
    // Announce classes, gathered by two threads.
    #[derive(Default)]
    struct Seen {
        sync_truth: BTreeMap<u16, (Instant, i64)>,
        t1: BTreeMap<u16, i64>,
        classes: Vec<(Instant, u8)>,
    }
    let seen = Mutex::new(Seen::default());
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let (locked_at, holdover_at, errors) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let Some(rx) = recv_until(&c.event, Instant::now() + Duration::from_millis(200))
                else {
                    continue;
                };
                if rx.is(MessageType::Sync) {
                    let t = rx.rx_ns.unwrap() + offset;
                    seen.lock().unwrap().sync_truth.insert(rx.seq(), (rx.at, t));
                }
            }
        });
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let Some(rx) = recv_until(&c.general, Instant::now() + Duration::from_millis(200))
                else {
                    continue;
                };
                let m = rx.msg();
                let mut seen = seen.lock().unwrap();
                match m.message_type() {
                    MessageType::FollowUp => {
                        seen.t1.insert(m.header.sequence_id, body_ts(&m));
                    }
                    MessageType::Announce => {
                        seen.classes.push((rx.at, announce_class(&m).unwrap()));
                    }
                    _ => {}
                }
            }
        });
        let class_since = |class: u8, since: Instant, timeout: Duration| {
            let deadline = since + timeout;
            loop {
                if let Some(at) = seen
                    .lock()
                    .unwrap()
                    .classes
                    .iter()
                    .find(|(at, c)| *at >= since && *c == class)
                    .map(|(at, _)| *at)
                {
                    return Some(at);
                }
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let locked_at = class_since(6, start, Duration::from_secs(20));
        let mut errors = Vec::new();
        if let Some(at) = locked_at {
            // Two seconds of locked Syncs, then GNSS loss.
            std::thread::sleep(Duration::from_secs(2));
            {
                let seen = seen.lock().unwrap();
                for (seq, (when, truth)) in &seen.sync_truth {
                    if let Some(t1) = seen.t1.get(seq).filter(|_| *when > at) {
                        errors.push(t1 - truth);
                    }
                }
            }
            sim.inject(&Fault::GnssLoss);
        }
        let injected = Instant::now();
        let holdover_at = locked_at.and_then(|_| class_since(7, injected, Duration::from_secs(10)));
        stop.store(true, Ordering::Relaxed);
        (locked_at, holdover_at.map(|t| t - injected), errors)
    });
    let drift = truth_offset(&sim) - offset;
    assert!(
        drift.abs() < 5_000,
        "truth - CLOCK_REALTIME moved by {drift} ns"
    );
    let classes: Vec<u8> = seen.lock().unwrap().classes.iter().map(|c| c.1).collect();
    let locked_at = locked_at.unwrap_or_else(|| panic!("never class 6: {classes:?}"));
    eprintln!(
        "class 6 after {:?}, class 7 {holdover_at:?} after GNSS loss; T1 - truth (ns): {errors:?}",
        locked_at - start
    );
    assert!(
        holdover_at.is_some(),
        "never class 7 after GNSS loss: {classes:?}"
    );
    assert!(
        errors.len() >= 5,
        "too few Sync/Follow_Up pairs: {errors:?}"
    );
    // T1 is the Sync's TX time, truth is taken at its RX: T1 - truth is minus
    // the loopback latency plus the card/time-map error.
    assert!(
        errors.iter().all(|e| e.abs() < 50_000),
        "Follow_Up time off the simulator's truth by > 50 µs: {errors:?}"
    );
    server.shutdown();
    drop(source);
}

// ---------------------------------------------------------------------------
// 7. Drain, undrain, shutdown.

fn cancelled_types(rxs: &[Rx], who: PortIdentity) -> Vec<MessageType> {
    let mut v: Vec<MessageType> = rxs
        .iter()
        .filter(|r| r.is(MessageType::Signaling) && target(&r.msg()) == who)
        .flat_map(|r| cancels(&r.msg()))
        .collect();
    v.sort_by_key(|t| *t as u8);
    v
}

#[test]
fn drain_undrain_and_shutdown_cancel_every_stream() {
    let mut h = start(|_| {});
    let all = [
        req(MessageType::Announce, 1, 60),
        req(MessageType::Sync, -2, 60),
        req(MessageType::DelayResp, -2, 60),
    ];
    let mut want: Vec<MessageType> = all.iter().map(|r| r.message_type).collect();
    want.sort_by_key(|t| *t as u8);
    let g = h.client.negotiate(&h.server, &all);
    assert!(g.iter().all(|g| g.duration_s == 60), "{g:?}");
    assert!(eventually(Duration::from_secs(2), || {
        total_subscriptions(&stats(&h.server)) == 3
    }));

    h.server.drain();
    let got = collect(&h.client.general, Duration::from_millis(800));
    assert_eq!(
        cancelled_types(&got, h.client.id),
        want,
        "CANCEL per stream"
    );
    let g = h
        .client
        .negotiate(&h.server, &[req(MessageType::Sync, -2, 60)]);
    assert_eq!(g[0].duration_s, 0, "refused while draining");
    let s = stats(&h.server);
    assert_eq!(s["drain"], 1);
    assert_eq!(total_subscriptions(&s), 0);
    assert_eq!(s["subscriptions.total"], 0, "{s:?}");
    // Delay_Req is ignored while draining.
    h.client.send_event(
        &Message::delay_req(h.client.id, 1, Timestamp::ZERO),
        h.server.event_addr(),
    );
    let late = collect(&h.client.general, Duration::from_millis(300));
    assert!(
        late.iter()
            .all(|r| !r.is(MessageType::DelayResp) && !r.is(MessageType::Sync)),
        "{late:?}"
    );

    h.server.undrain();
    let g = h.client.negotiate(&h.server, &all);
    assert!(g.iter().all(|g| g.duration_s == 60), "{g:?}");
    assert_eq!(stat(&h.server, "drain"), 0);
    // Renewals hold no extra slot.
    let g = h.client.negotiate(&h.server, &all);
    assert!(g.iter().all(|g| g.duration_s == 60), "{g:?}");
    assert!(eventually(Duration::from_secs(2), || {
        let s = stats(&h.server);
        total_subscriptions(&s) == 3 && s["subscriptions.total"] == 3
    }));

    let Harness { server, client, .. } = h;
    let t = Instant::now();
    server.shutdown();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    let got = collect(&client.general, Duration::from_millis(500));
    assert_eq!(
        cancelled_types(&got, client.id),
        want,
        "CANCEL per stream on shutdown"
    );
}

#[test]
fn drain_file_drains_and_undrain_file_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let (drain, undrain) = (dir.path().join("drain"), dir.path().join("undrain"));
    let mut h = start(|c| {
        c.drain_file = Some(drain.clone());
        c.undrain_file = Some(undrain.clone());
    });
    let g = h
        .client
        .negotiate(&h.server, &[req(MessageType::Sync, -2, 60)]);
    assert_eq!(g[0].duration_s, 60);
    std::fs::write(&drain, b"").unwrap();
    let cancelled = wait_for(&h.client.general, Duration::from_secs(2), |_, m| {
        (cancels(m) == [MessageType::Sync]).then_some(())
    });
    assert!(cancelled.is_some(), "the drain file cancels every stream");
    assert_eq!(stat(&h.server, "drain"), 1);
    let g = h
        .client
        .negotiate(&h.server, &[req(MessageType::Sync, -2, 60)]);
    assert_eq!(g[0].duration_s, 0);
    std::fs::write(&undrain, b"").unwrap();
    assert!(eventually(Duration::from_secs(2), || stat(
        &h.server, "drain"
    ) == 0));
    let g = h
        .client
        .negotiate(&h.server, &[req(MessageType::Sync, -2, 60)]);
    assert_eq!(g[0].duration_s, 60, "the undrain file wins");
    std::fs::remove_file(&undrain).unwrap();
    assert!(eventually(Duration::from_secs(2), || stat(
        &h.server, "drain"
    ) == 1));
    std::fs::remove_file(&drain).unwrap();
    assert!(eventually(Duration::from_secs(2), || stat(
        &h.server, "drain"
    ) == 0));
}

// ---------------------------------------------------------------------------
// 8. Hostile input.

/// xorshift64*: deterministic "random" bytes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn encode(msg: &Message<'_>, tlvs: &[TypedTlv<'_>]) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = write_with_tlvs(&mut buf, msg, tlvs).unwrap();
    buf.truncate(n);
    buf
}

fn set_len(b: &mut [u8], len: usize) {
    b[2..4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
}

/// Datagrams that must never get an answer. Each is derived from a message
/// that would get one (a Sync request, an SPTP Delay_Req), so a server that
/// accepted it would show it.
fn hostile_corpus(id: PortIdentity) -> Vec<(&'static str, Vec<u8>)> {
    let request = encode(
        &Message::signaling(id, 1, PortIdentity::ALL_ONES),
        &[TypedTlv::Request(req(MessageType::Sync, -2, 60))],
    );
    let sptp = encode(&Message::sptp_delay_req(id, 2), &[]);
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![("empty", vec![]), ("one byte", vec![0x0c])];
    for base in [&request, &sptp] {
        for version in [1u8, 3] {
            let mut b = base.clone();
            b[1] = (b[1] & 0xF0) | version;
            v.push(("wrong version", b));
        }
        let mut b = base.clone();
        set_len(&mut b, base.len() + 100);
        v.push(("messageLength beyond the datagram", b));
        let mut b = base.clone();
        set_len(&mut b, 30);
        v.push(("messageLength below the header", b));
        v.push(("truncated header", base[..10].to_vec()));
        v.push(("truncated header", base[..33].to_vec()));
        v.push(("truncated body", base[..40].to_vec()));
        let mut b = base.clone();
        b[0] = (b[0] & 0xF0) | 0x5; // reserved message type
        v.push(("reserved message type", b));
    }
    // Huge TLV length.
    let mut b = request.clone();
    b[46..48].copy_from_slice(&0xFFFFu16.to_be_bytes());
    v.push(("huge TLV length", b));
    // TLV header cut off.
    let mut b = request.clone();
    b.truncate(46);
    let n = b.len();
    set_len(&mut b, n);
    v.push(("cut TLV header", b));
    // 65 TLVs.
    let many: Vec<TypedTlv<'_>> = (0..65)
        .map(|_| TypedTlv::Request(req(MessageType::Sync, -2, 60)))
        .collect();
    let msg = Message::signaling(id, 3, PortIdentity::ALL_ONES);
    let mut buf = vec![0u8; 4096];
    let mut w = ptp_proto::MessageWriter::new(&mut buf, &msg).unwrap();
    for t in &many[..64] {
        w.push_tlv(t).unwrap();
    }
    let mut n = w.finish();
    let extra = &request[44..];
    buf[n..n + extra.len()].copy_from_slice(extra);
    n += extra.len();
    buf.truncate(n);
    set_len(&mut buf, n);
    v.push(("65 TLVs", buf));
    // A request whose messageType is reserved, and one that is too short.
    let mut b = request.clone();
    b[48] = 0x50;
    v.push(("reserved type in request TLV", b));
    let mut b = request[..44].to_vec();
    b.extend_from_slice(&[0x00, 0x04, 0x00, 0x02, 0x00, 0xFE]);
    let n = b.len();
    set_len(&mut b, n);
    v.push(("short request TLV", b));
    // A valid Sync request followed by a broken TLV: nothing may be granted.
    let mut b = request.clone();
    b.extend_from_slice(&[0x00, 0x04, 0x00, 0x06, 0xE0, 0xFE, 0, 0, 0, 60]);
    let n = b.len();
    set_len(&mut b, n);
    v.push(("good request then a bad one", b));
    // Unknown TLV types only: well-formed, nothing to answer.
    let unknown = encode(&Message::signaling(id, 4, PortIdentity::ALL_ONES), &[]);
    let mut b = unknown;
    b.extend_from_slice(&[0x7F, 0xF0, 0x00, 0x04, 1, 2, 3, 4, 0x20, 0x01, 0x00, 0x00]);
    let n = b.len();
    set_len(&mut b, n);
    v.push(("unknown TLV types", b));
    // Datagrams longer than any PTP message the server reads (1500 octets):
    // well-formed heads, but the tail would be cut off.
    for base in [&request, &sptp] {
        let mut b = base.clone();
        b.resize(1600, 0);
        v.push(("oversized datagram", b));
    }
    // A Delay_Req with an impossible timestamp.
    let mut b = sptp.clone();
    b[40..44].copy_from_slice(&1_000_000_000u32.to_be_bytes());
    v.push(("timestamp ns >= 1e9", b));
    // Random bytes, and random bytes that look like PTPv2 headers; anything
    // that happens to parse is left out.
    let mut rng = Rng(0x5eed_1588);
    for i in 0..400 {
        let len = (rng.next() % 160) as usize;
        let mut b = rng.bytes(len);
        if i % 2 == 1 && b.len() > 2 {
            b[1] = 0x12;
        }
        if parse(&b).is_err() {
            v.push(("random", b));
        }
    }
    v
}

/// Whether the server must count this datagram as malformed.
fn counts_as_malformed(b: &[u8], general: bool) -> bool {
    if b.len() > 1500 {
        return true;
    }
    match parse(b) {
        Err(_) => true,
        Ok(m) => {
            general
                && m.message_type() == MessageType::Signaling
                && m.tlvs.iter().any(|t| t.typed().is_err())
        }
    }
}

#[test]
fn hostile_input_is_dropped_counted_and_bounded() {
    let h = start(|c| c.max_streams = 1000);
    let server = &h.server;
    let c = &h.client;
    let corpus = hostile_corpus(c.id);
    let random = corpus.iter().filter(|(w, _)| *w == "random").count();
    assert!(random > 300, "{random} random datagrams");
    let mut expected = 0;
    for (i, (_, d)) in corpus.iter().enumerate() {
        for sock in [&c.event, &c.general] {
            for (to, general) in [(server.event_addr(), false), (server.general_addr(), true)] {
                sock.send_to(d, to).unwrap();
                expected += i64::from(counts_as_malformed(d, general));
            }
        }
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let (ev, ge) = std::thread::scope(|s| {
        let e = s.spawn(|| collect(&c.event, Duration::from_millis(800)));
        let g = s.spawn(|| collect(&c.general, Duration::from_millis(800)));
        (e.join().unwrap(), g.join().unwrap())
    });
    assert!(ev.is_empty(), "replies to hostile input: {ev:?}");
    assert!(ge.is_empty(), "replies to hostile input: {ge:?}");
    assert!(
        eventually(Duration::from_secs(2), || stat(server, "rx.malformed")
            == expected),
        "rx.malformed {} != {expected}",
        stat(server, "rx.malformed")
    );
    let s = stats(server);
    assert_eq!(total_subscriptions(&s), 0, "{s:?}");

    // A flood of 20 000 requests from distinct clients, max_streams 1000.
    let flood = PtpSocket::bind(
        SocketAddr::new(LOCALHOST, 0),
        &SocketOptions {
            recv_buffer: Some(16 << 20),
            ..SocketOptions::default()
        },
    )
    .unwrap();
    let flooded = Instant::now();
    let sent = AtomicBool::new(false);
    let (granted, refused, expired) = std::thread::scope(|s| {
        let counter = s.spawn(|| {
            let (mut granted, mut refused, mut expired) = (0usize, 0usize, 0usize);
            let mut last = Instant::now();
            while !sent.load(Ordering::Relaxed) || last.elapsed() < Duration::from_millis(700) {
                let Some(rx) = recv_until(&flood, Instant::now() + Duration::from_millis(100))
                else {
                    continue;
                };
                last = Instant::now();
                let m = rx.msg();
                expired += cancels(&m).len();
                for g in grants(&m) {
                    if g.duration_s > 0 {
                        granted += 1;
                    } else {
                        refused += 1;
                    }
                }
            }
            (granted, refused, expired)
        });
        let mut buf = [0u8; 128];
        let mut max_seen = 0;
        for i in 0..20_000u32 {
            let b = i.to_be_bytes();
            let id =
                PortIdentity::new(ClockIdentity([0x0f, 0x10, b[0], b[1], b[2], b[3], 0, 1]), 1);
            let t = [MessageType::DelayResp, MessageType::Announce][i as usize % 2];
            let n = write_with_tlvs(
                &mut buf,
                &Message::signaling(id, i as u16, PortIdentity::ALL_ONES),
                &[TypedTlv::Request(req(t, 3, 4))],
            )
            .unwrap();
            flood.send_to(&buf[..n], server.general_addr()).unwrap();
            if i % 500 == 499 {
                std::thread::sleep(Duration::from_millis(1));
            }
            if i % 5000 == 4999 {
                max_seen = max_seen.max(total_subscriptions(&stats(server)));
            }
        }
        sent.store(true, Ordering::Relaxed);
        // The server stays responsive during the aftermath.
        let mut probe = Client::new(9, 1);
        let seq = probe.request(server.general_addr(), &[req(MessageType::Sync, -2, 10)]);
        let rx = probe.reply(server, seq);
        assert_eq!(grants(&rx.msg()).len(), 1);
        for _ in 0..10 {
            max_seen = max_seen.max(total_subscriptions(&stats(server)));
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(max_seen <= 1000, "{max_seen} subscriptions held");
        counter.join().unwrap()
    });
    let s = stats(server);
    eprintln!(
        "flood: {granted} granted, {refused} refused, {expired} expired in {:?}; stats {s:?}",
        flooded.elapsed()
    );
    assert!(
        granted <= 1000 + expired,
        "{granted} grants with max_streams = 1000 and {expired} expiries"
    );
    assert!(granted >= 900, "only {granted} of the first 1000 granted");
    assert!(refused > 0);
    assert!(s["subscriptions.over_capacity"] > 0, "{s:?}");
    assert!(total_subscriptions(&s) <= 1000, "{s:?}");
    assert!(s["subscriptions.total"] <= 1000, "{s:?}");
    assert_eq!(s["rx.malformed"], expected, "the flood is not malformed");

    // Once the flood's 4 s grants have expired, normal negotiation works.
    assert!(
        eventually(Duration::from_secs(8), || {
            let s = stats(server);
            total_subscriptions(&s) == 0 && s["subscriptions.total"] == 0
        }),
        "{:?}",
        stats(server)
    );
    let mut late = Client::new(10, 1);
    let g = late.negotiate(server, &[req(MessageType::Sync, -2, 60)]);
    assert_eq!(g[0].duration_s, 60, "{g:?}");
}

// ---------------------------------------------------------------------------
// 9. Monitoring.

#[test]
fn monitoring_serves_json_and_prometheus() {
    let mut h = start(|_| {});
    let server = &h.server;
    let g = h
        .client
        .negotiate(server, &[req(MessageType::Sync, -2, 60)]);
    assert_eq!(g[0].duration_s, 60);
    let addr = server.monitor_addr().expect("monitoring");
    let (status, head, _) = http_get(addr, "/");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("application/json"),
        "{head}"
    );
    assert!(eventually(Duration::from_secs(2), || {
        let s = stats(server);
        s["subscriptions.sync"] == 1 && s["clockclass"] == 6
    }));
    let s = stats(server);
    for key in [
        "rx.signaling",
        "tx.signaling",
        "rx.delay_req",
        "tx.sync",
        "tx.follow_up",
        "tx.announce",
        "tx.delay_resp",
        "subscriptions.sync",
        "subscriptions.announce",
        "subscriptions.delay_resp",
        "subscriptions.over_capacity",
        "rx.malformed",
        "clockclass",
        "clockaccuracy",
        "utcoffset_sec",
        "drain",
    ] {
        assert!(s.contains_key(key), "no {key}: {s:?}");
    }
    assert_eq!(s["rx.signaling"], 1);
    assert_eq!(s["tx.signaling"], 1);
    assert!(s["tx.sync"] >= 1);
    assert_eq!(s["clockaccuracy"], 0x21);
    assert_eq!(s["utcoffset_sec"], 37);
    assert_eq!(s["drain"], 0);

    let (status, head, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let mut samples = Vec::new();
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line.rsplit_once(' ').expect("name value");
        assert!(
            name.starts_with("timecard_ptp_server_") || name.starts_with("timecard_build_info{"),
            "{line}"
        );
        assert!(value.parse::<i64>().is_ok(), "{line}");
        samples.push((name.to_string(), value.to_string()));
    }
    for (n, v) in [
        (
            "timecard_ptp_server_rx_messages_total{message=\"signaling\"}",
            "1",
        ),
        ("timecard_ptp_server_subscriptions{message=\"sync\"}", "1"),
        ("timecard_ptp_server_clock_class", "6"),
        ("timecard_ptp_server_utc_offset_seconds", "37"),
        ("timecard_ptp_server_draining", "0"),
    ] {
        assert!(
            samples.iter().any(|(x, y)| x == n && y == v),
            "no {n} {v} in {body}"
        );
    }
    let build_info = format!(
        "timecard_build_info{{daemon=\"ptp_server\",version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    assert!(body.ends_with(&build_info), "{body}");
    let (status, _, _) = http_get(addr, "/nope");
    assert_eq!(status, 404);

    // A client that trickles its request (or sends an endless header) holds
    // the monitor for at most a couple of seconds, and never blocks shutdown.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let trickle = || {
            let mut slow = TcpStream::connect(addr).unwrap();
            slow.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").unwrap();
            let until = Instant::now() + Duration::from_secs(5);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                if slow.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        };
        s.spawn(trickle);
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        let (status, _, _) = http_get(addr, "/");
        assert_eq!(status, 200);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        s.spawn(trickle);
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        let Harness { server, .. } = h;
        server.shutdown();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "shutdown took {:?}",
            t.elapsed()
        );
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn a_failed_start_leaves_nothing_bound() {
    // Monitoring on a busy port fails after the UDP sockets were bound.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(12, 1);
    let mut config = base_config(client.event_port());
    config.event_port = port;
    config.monitoring = Some(busy.local_addr().unwrap().to_string());
    let err = Server::start(&config, FakeTime::new()).unwrap_err();
    assert!(err.to_string().contains("monitoring"), "{err}");
    // Without SO_REUSEPORT this bind fails while any server socket holds the port.
    std::net::UdpSocket::bind(("127.0.0.1", port)).expect("the event port was released");
}
