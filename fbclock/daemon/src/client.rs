//! PTP transports: the I/O edge that turns packets into [`Exchange`]s.
//!
//! Two ways to talk to a grandmaster, one result:
//!
//! - [`SptpClient`] — Simple PTP (facebook/time `sptp`, served by ptp4u and
//!   our `ptp-server`): send one Delay_Req flagged `UNICAST |
//!   PROFILE_SPECIFIC_1` from the event socket (kernel TX timestamp → `t3`);
//!   the server answers with a Sync (RX timestamp → `t2`, originTimestamp =
//!   `t4`, correction = the Sync path's) and an Announce (originTimestamp =
//!   `t1`, correction = the Delay_Req's as it arrived, plus the
//!   grandmaster's identity and quality). The server sends that Announce to
//!   port 320 unless our `portNumber` is above 10, in which case it goes back
//!   to the Delay_Req's source port — the event socket. Both sockets are
//!   read, so either works.
//! - [`UnicastClient`] — IEEE 1588 negotiated unicast (linuxptp's `ptp4l`
//!   as master has no SPTP): Signaling REQUEST_UNICAST_TRANSMISSION for
//!   Announce, Sync and Delay_Resp (renewed at half the granted duration),
//!   then per exchange: Sync (`t2`) + Follow_Up (`t1` = preciseOriginTimestamp),
//!   a Delay_Req sent right away (`t3`), its Delay_Resp (`t4`). Pairs by
//!   sequenceId. ptp4l sends to the client's ports 319 and 320 whatever the
//!   source port, so this mode binds them (configurable for tests).
//!
//! One receive thread per socket maps each packet's kernel `CLOCK_REALTIME`
//! timestamp onto the [`LocalClock`] as soon as it arrives and queues it.
//! Timeouts are lost exchanges; anything malformed, from elsewhere or out of
//! sequence is dropped and counted in [`TransportCounters`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ptp_proto::{
    AcknowledgeCancelUnicastTransmission, Body, Flags, Message, MessageType, PortIdentity,
    RequestUnicastTransmission, TimeInterval, Timestamp, TypedTlv, write_with_tlvs,
};
use ptp_server::net::{PtpSocket, SocketOptions, TimestampMode};
use serde::Serialize;

use crate::clock::LocalClock;
use crate::estimator::{Exchange, GmInfo};

/// How long one TX-timestamp poll waits (ptp4u: 1 ms).
const TXTS_TIMEOUT: Duration = Duration::from_millis(1);
/// TX-timestamp polls before giving up (ptp4u: 100).
const TXTS_ATTEMPTS: u32 = 100;
/// Receive threads wake up this often to check for shutdown.
const RX_POLL: Duration = Duration::from_millis(100);
/// Unicast requests are repeated at most this often while ungranted.
const REQUEST_RETRY: Duration = Duration::from_secs(1);

/// Where and how to talk to the grandmaster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// The server's event address (its port 319).
    pub server: SocketAddr,
    /// The server's general port (320): Signaling goes there.
    pub server_general_port: u16,
    /// Local address to bind; `None` = the unspecified address of the
    /// server's family.
    pub local_ip: Option<IpAddr>,
    /// Local event port (0 = ephemeral; negotiated unicast with ptp4l: 319).
    pub local_event_port: u16,
    /// Local general port, if any (negotiated unicast with ptp4l: 320).
    pub local_general_port: Option<u16>,
    /// Our port identity (clock identity + port number; SPTP port numbers
    /// above 10 get the Announce on the event socket).
    pub port_identity: PortIdentity,
    /// PTP domain.
    pub domain: u8,
    /// log2 of the Sync / Delay_Resp interval to request (negotiated unicast).
    pub log_interval: i8,
    /// Grant duration to request, s (negotiated unicast).
    pub unicast_duration_s: u32,
    /// How long to wait for the answers once the request left, per exchange.
    pub response_timeout: Duration,
}

/// Why an exchange produced nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Loss {
    /// Not all answers arrived in time.
    #[error("timeout waiting for the server")]
    Timeout,
    /// The kernel did not report our Delay_Req's TX timestamp.
    #[error("no TX timestamp for the Delay_Req")]
    TxTimestampMissing,
    /// Sending failed.
    #[error("send failed")]
    SendFailed,
    /// The caller asked to stop while waiting.
    #[error("stopped")]
    Stopped,
}

/// A transport error at setup.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A socket could not be opened or bound.
    #[error("binding the {what} socket on {addr}: {source}")]
    Bind {
        /// "event" or "general".
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Negotiated unicast needs a general socket (ptp4l sends to port 320).
    #[error("negotiated unicast needs a local general port (ptp4l sends to port 320)")]
    NoGeneralPort,
    /// A receive thread could not be started.
    #[error("starting a receive thread: {0}")]
    Thread(io::Error),
}

/// Packet-level counters of a transport (monitoring).
#[derive(Debug, Default)]
pub struct TransportCounters {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams that do not parse, are truncated or lack a needed timestamp.
    pub malformed: AtomicU64,
    /// Well-formed messages that belong to no pending exchange (old sequence
    /// ids, another domain or sender, unexpected types).
    pub unmatched: AtomicU64,
    /// Delay_Req sent without a TX timestamp.
    pub tx_timestamp_missing: AtomicU64,
    /// Failed sends.
    pub send_errors: AtomicU64,
    /// Unicast grants received (duration > 0).
    pub grants: AtomicU64,
    /// Unicast requests denied (grant with duration 0).
    pub denials: AtomicU64,
    /// Unicast CANCELs received from the server.
    pub cancels: AtomicU64,
}

/// A copy of [`TransportCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransportStats {
    /// Datagrams received.
    pub received: u64,
    /// Malformed datagrams.
    pub malformed: u64,
    /// Messages matching no pending exchange.
    pub unmatched: u64,
    /// Missing TX timestamps.
    pub tx_timestamp_missing: u64,
    /// Failed sends.
    pub send_errors: u64,
    /// Unicast grants.
    pub grants: u64,
    /// Unicast denials.
    pub denials: u64,
    /// Unicast cancels.
    pub cancels: u64,
}

impl TransportCounters {
    /// A consistent-enough copy.
    #[must_use]
    pub fn snapshot(&self) -> TransportStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            received: r(&self.received),
            malformed: r(&self.malformed),
            unmatched: r(&self.unmatched),
            tx_timestamp_missing: r(&self.tx_timestamp_missing),
            send_errors: r(&self.send_errors),
            grants: r(&self.grants),
            denials: r(&self.denials),
            cancels: r(&self.cancels),
        }
    }

    fn inc(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }
}

/// The result of one exchange attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// All four timestamps.
    Complete(Exchange),
    /// Nothing usable.
    Lost(Loss),
}

/// A way to run exchanges with a grandmaster.
pub trait Transport: Send {
    /// Runs one exchange, waiting at most `timeout` in total; gives up
    /// within 100 ms once `stop` is set ([`Loss::Stopped`]).
    fn exchange(&mut self, timeout: Duration, stop: &AtomicBool) -> Outcome;

    /// Whether the server paces the exchanges (negotiated unicast: its Syncs
    /// arrive at the granted rate) rather than the client (SPTP).
    fn server_paced(&self) -> bool;

    /// The packet counters.
    fn counters(&self) -> Arc<TransportCounters>;
}

/// Which of our sockets a packet arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sock {
    Event,
    General,
}

/// One received datagram.
#[derive(Debug)]
struct Packet {
    sock: Sock,
    from: SocketAddr,
    /// Kernel RX timestamp mapped onto the local clock.
    rx_local_ns: Option<i64>,
    data: Vec<u8>,
}

/// IPv4-mapped IPv6 addresses as IPv4, for comparisons.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Timestamp → ns, or `None` if it does not fit an i64.
fn ns(t: Timestamp) -> Option<i64> {
    i64::try_from(t.to_nanos()).ok()
}

/// Sockets, their receive threads and the queue they fill.
#[derive(Debug)]
struct Endpoint {
    config: TransportConfig,
    clock: Arc<dyn LocalClock>,
    event: Arc<PtpSocket>,
    general: Option<Arc<PtpSocket>>,
    inbox: Receiver<Packet>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    counters: Arc<TransportCounters>,
}

impl Endpoint {
    fn open(config: TransportConfig, clock: Arc<dyn LocalClock>) -> Result<Self, TransportError> {
        let ip = config.local_ip.unwrap_or(match config.server {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        let bind = |what, port, timestamping| {
            let addr = SocketAddr::new(ip, port);
            PtpSocket::bind(
                addr,
                &SocketOptions {
                    timestamping,
                    ..SocketOptions::default()
                },
            )
            .map(Arc::new)
            .map_err(|source| TransportError::Bind { what, addr, source })
        };
        let event = bind(
            "event",
            config.local_event_port,
            Some(TimestampMode::Software),
        )?;
        let general = config
            .local_general_port
            .map(|p| bind("general", p, None))
            .transpose()?;
        let (tx, inbox) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(TransportCounters::default());
        let mut ep = Self {
            config,
            clock,
            event,
            general,
            inbox,
            stop,
            threads: Vec::new(),
            counters,
        };
        ep.spawn_rx(Sock::Event, tx.clone())?;
        if ep.general.is_some() {
            ep.spawn_rx(Sock::General, tx)?;
        }
        Ok(ep)
    }

    fn spawn_rx(&mut self, sock: Sock, tx: Sender<Packet>) -> Result<(), TransportError> {
        let socket = match sock {
            Sock::Event => self.event.clone(),
            Sock::General => self.general.clone().ok_or(TransportError::NoGeneralPort)?,
        };
        socket
            .set_read_timeout(Some(RX_POLL))
            .map_err(TransportError::Thread)?;
        let clock = self.clock.clone();
        let stop = self.stop.clone();
        let counters = self.counters.clone();
        let name = match sock {
            Sock::Event => "fbclockd-rx-event",
            Sock::General => "fbclockd-rx-general",
        };
        let t = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(rx) = socket.recv(&mut buf) else {
                        continue;
                    };
                    // Map first: the conversion is exact only for fresh stamps.
                    let rx_local_ns = rx.timestamp_ns.map(|t| clock.from_kernel_ns(t));
                    TransportCounters::inc(&counters.received);
                    if rx.truncated {
                        TransportCounters::inc(&counters.malformed);
                        continue;
                    }
                    let p = Packet {
                        sock,
                        from: rx.from,
                        rx_local_ns,
                        data: buf[..rx.len].to_vec(),
                    };
                    if tx.send(p).is_err() {
                        break;
                    }
                }
            })
            .map_err(TransportError::Thread)?;
        self.threads.push(t);
        Ok(())
    }

    /// The next packet before `deadline`.
    fn recv_until(&self, deadline: Instant, stop: &AtomicBool) -> Result<Option<Packet>, Loss> {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(Loss::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if let Ok(p) = self.inbox.recv_timeout((deadline - now).min(RX_POLL)) {
                return Ok(Some(p));
            }
        }
    }

    /// A queued packet, without waiting.
    fn try_recv(&self) -> Option<Packet> {
        self.inbox.try_recv().ok()
    }

    /// Sends `buf` from the event socket with a TX timestamp; returns it on
    /// the local clock.
    fn send_timestamped(&self, buf: &[u8], to: SocketAddr) -> Result<i64, Loss> {
        match self
            .event
            .send_with_tx_timestamp(buf, to, TXTS_TIMEOUT, TXTS_ATTEMPTS)
        {
            Ok(Some(t)) => Ok(self.clock.from_kernel_ns(t)),
            Ok(None) => {
                TransportCounters::inc(&self.counters.tx_timestamp_missing);
                Err(Loss::TxTimestampMissing)
            }
            Err(e) => {
                tracing::debug!(error = %e, "Delay_Req send failed");
                TransportCounters::inc(&self.counters.send_errors);
                Err(Loss::SendFailed)
            }
        }
    }

    /// Sends a general message from the general socket (or the event socket).
    fn send_general(&self, buf: &[u8]) {
        let to = SocketAddr::new(self.config.server.ip(), self.config.server_general_port);
        let sock = self.general.as_ref().unwrap_or(&self.event);
        if let Err(e) = sock.send_to(buf, to) {
            tracing::debug!(error = %e, "general send failed");
            TransportCounters::inc(&self.counters.send_errors);
        }
    }

    /// Parses a packet from the server (right sender, domain); counts the rest.
    fn accept<'p>(&self, p: &'p Packet) -> Option<Message<'p>> {
        let Ok(m) = Message::parse(&p.data) else {
            TransportCounters::inc(&self.counters.malformed);
            return None;
        };
        if canonical(p.from.ip()) != canonical(self.config.server.ip())
            || m.header.domain_number != self.config.domain
        {
            TransportCounters::inc(&self.counters.unmatched);
            return None;
        }
        Some(m)
    }

    fn unmatched(&self) {
        TransportCounters::inc(&self.counters.unmatched);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Simple PTP client (see the module docs).
#[derive(Debug)]
pub struct SptpClient {
    ep: Endpoint,
    seq: u16,
}

impl SptpClient {
    /// Binds the sockets and starts the receive threads.
    ///
    /// # Errors
    /// Socket setup failures, with the address.
    pub fn open(
        config: TransportConfig,
        clock: Arc<dyn LocalClock>,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            ep: Endpoint::open(config, clock)?,
            seq: 0,
        })
    }

    /// The bound event socket address.
    ///
    /// # Errors
    /// `getsockname` failure.
    pub fn local_event_addr(&self) -> io::Result<SocketAddr> {
        self.ep.event.local_addr()
    }
}

/// Sync half of an SPTP answer.
#[derive(Clone, Copy, Debug)]
struct SptpSync {
    t2: i64,
    t4: i64,
    cf: TimeInterval,
    source: PortIdentity,
}

impl Transport for SptpClient {
    fn exchange(&mut self, timeout: Duration, stop: &AtomicBool) -> Outcome {
        let deadline = Instant::now() + timeout;
        // Late answers to earlier requests.
        while self.ep.try_recv().is_some() {
            self.ep.unmatched();
        }
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut req = Message::sptp_delay_req(self.ep.config.port_identity, seq);
        req.header.domain_number = self.ep.config.domain;
        let mut buf = [0u8; 64];
        let Ok(n) = req.write(&mut buf) else {
            return Outcome::Lost(Loss::SendFailed);
        };
        let t3 = match self.ep.send_timestamped(&buf[..n], self.ep.config.server) {
            Ok(t) => t,
            Err(l) => return Outcome::Lost(l),
        };
        let mut sync: Option<SptpSync> = None;
        let mut announce: Option<(i64, TimeInterval, GmInfo, PortIdentity)> = None;
        loop {
            if let (Some(s), Some((t1, cf_req, gm, source))) = (sync, announce) {
                if s.source == source {
                    return Outcome::Complete(Exchange {
                        t1,
                        t2: s.t2,
                        t3,
                        t4: s.t4,
                        cf_sync: s.cf,
                        cf_req,
                        gm,
                    });
                }
                // Two servers answering the same sequence id: start over.
                self.ep.unmatched();
                sync = None;
                announce = None;
            }
            let p = match self.ep.recv_until(deadline, stop) {
                Ok(Some(p)) => p,
                Ok(None) => return Outcome::Lost(Loss::Timeout),
                Err(l) => return Outcome::Lost(l),
            };
            let Some(m) = self.ep.accept(&p) else {
                continue;
            };
            if m.header.sequence_id != seq {
                self.ep.unmatched();
                continue;
            }
            match m.body {
                Body::Sync(b) if p.sock == Sock::Event => {
                    let (Some(t2), Some(t4)) = (p.rx_local_ns, ns(b.origin_timestamp)) else {
                        TransportCounters::inc(&self.ep.counters.malformed);
                        continue;
                    };
                    sync = Some(SptpSync {
                        t2,
                        t4,
                        cf: m.header.correction,
                        source: m.header.source_port_identity,
                    });
                }
                Body::Announce(b) => {
                    let Some(t1) = ns(b.origin_timestamp) else {
                        TransportCounters::inc(&self.ep.counters.malformed);
                        continue;
                    };
                    announce = Some((
                        t1,
                        m.header.correction,
                        GmInfo::from_announce(&m.header, &b),
                        m.header.source_port_identity,
                    ));
                }
                _ => self.ep.unmatched(),
            }
        }
    }

    fn server_paced(&self) -> bool {
        false
    }

    fn counters(&self) -> Arc<TransportCounters> {
        self.ep.counters.clone()
    }
}

/// One negotiated stream (Announce, Sync or Delay_Resp).
#[derive(Clone, Copy, Debug)]
struct Grant {
    message_type: MessageType,
    log_interval: i8,
    granted_until: Option<Instant>,
    last_request: Option<Instant>,
}

/// A Sync waiting for its Follow_Up.
#[derive(Clone, Copy, Debug)]
struct PendingSync {
    seq: u16,
    t2: i64,
    cf: TimeInterval,
    source: PortIdentity,
}

/// A Follow_Up that arrived before its Sync (different sockets, different threads).
#[derive(Clone, Copy, Debug)]
struct PendingFollowUp {
    seq: u16,
    t1: i64,
    cf: TimeInterval,
    source: PortIdentity,
}

/// What a unicast packet completed.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// A Sync with its Follow_Up: (t1, t2, cf_sync).
    Sync(i64, i64, TimeInterval),
    /// A Delay_Resp: (sequenceId, t4, cf_req).
    DelayResp(u16, i64, TimeInterval),
}

/// IEEE 1588 negotiated-unicast client (see the module docs).
#[derive(Debug)]
pub struct UnicastClient {
    ep: Endpoint,
    grants: [Grant; 3],
    signaling_seq: u16,
    delay_req_seq: u16,
    sync: Option<PendingSync>,
    follow_up: Option<PendingFollowUp>,
    gm: GmInfo,
}

impl UnicastClient {
    /// Binds the sockets (event and general are both required) and starts
    /// the receive threads. Requests go out with the first exchange.
    ///
    /// # Errors
    /// Socket setup failures; [`TransportError::NoGeneralPort`].
    pub fn open(
        config: TransportConfig,
        clock: Arc<dyn LocalClock>,
    ) -> Result<Self, TransportError> {
        if config.local_general_port.is_none() {
            return Err(TransportError::NoGeneralPort);
        }
        let log = config.log_interval;
        let grant = |message_type, log_interval| Grant {
            message_type,
            log_interval,
            granted_until: None,
            last_request: None,
        };
        Ok(Self {
            ep: Endpoint::open(config, clock)?,
            grants: [
                grant(MessageType::Announce, log.max(0)),
                grant(MessageType::Sync, log),
                grant(MessageType::DelayResp, log),
            ],
            signaling_seq: 0,
            delay_req_seq: 0,
            sync: None,
            follow_up: None,
            gm: GmInfo::default(),
        })
    }

    /// The bound event socket address (where the server must send Sync).
    ///
    /// # Errors
    /// `getsockname` failure.
    pub fn local_event_addr(&self) -> io::Result<SocketAddr> {
        self.ep.event.local_addr()
    }

    /// Whether every stream is currently granted.
    #[must_use]
    pub fn granted(&self) -> bool {
        let now = Instant::now();
        self.grants
            .iter()
            .all(|g| g.granted_until.is_some_and(|u| u > now))
    }

    /// Requests what is missing or due for renewal (half the duration left).
    fn maintain(&mut self, now: Instant) {
        let duration = Duration::from_secs(u64::from(self.ep.config.unicast_duration_s));
        for i in 0..self.grants.len() {
            let g = self.grants[i];
            let due = g
                .granted_until
                .is_none_or(|u| u.saturating_duration_since(now) < duration / 2);
            let may = g
                .last_request
                .is_none_or(|l| now.saturating_duration_since(l) >= REQUEST_RETRY);
            if due && may {
                self.request(i, now);
            }
        }
    }

    fn request(&mut self, i: usize, now: Instant) {
        let g = &mut self.grants[i];
        g.last_request = Some(now);
        let seq = self.signaling_seq;
        self.signaling_seq = seq.wrapping_add(1);
        let mut msg = Message::signaling(self.ep.config.port_identity, seq, PortIdentity::ALL_ONES);
        msg.header.domain_number = self.ep.config.domain;
        let tlv = TypedTlv::Request(RequestUnicastTransmission {
            message_type: g.message_type,
            log_inter_message_period: g.log_interval,
            duration_s: self.ep.config.unicast_duration_s,
        });
        tracing::debug!(
            stream = g.message_type.name(),
            log_interval = g.log_interval,
            "requesting unicast"
        );
        let mut buf = [0u8; 128];
        if let Ok(n) = write_with_tlvs(&mut buf, &msg, &[tlv]) {
            self.ep.send_general(&buf[..n]);
        }
    }

    fn signaling(&mut self, m: &Message<'_>, now: Instant) {
        if let Body::Signaling(s) = m.body
            && s.target_port_identity != self.ep.config.port_identity
            && s.target_port_identity != PortIdentity::ALL_ONES
        {
            self.ep.unmatched();
            return;
        }
        for tlv in m.tlvs.typed() {
            match tlv {
                Ok(TypedTlv::Grant(g)) => {
                    let Some(slot) = self
                        .grants
                        .iter_mut()
                        .find(|x| x.message_type == g.message_type)
                    else {
                        continue;
                    };
                    if g.duration_s == 0 {
                        TransportCounters::inc(&self.ep.counters.denials);
                        tracing::warn!(stream = g.message_type.name(), "unicast request denied");
                        slot.granted_until = None;
                    } else {
                        TransportCounters::inc(&self.ep.counters.grants);
                        slot.granted_until =
                            Some(now + Duration::from_secs(u64::from(g.duration_s)));
                    }
                }
                Ok(TypedTlv::Cancel(c)) => {
                    TransportCounters::inc(&self.ep.counters.cancels);
                    if let Some(slot) = self
                        .grants
                        .iter_mut()
                        .find(|x| x.message_type == c.message_type)
                    {
                        slot.granted_until = None;
                    }
                    let seq = self.signaling_seq;
                    self.signaling_seq = seq.wrapping_add(1);
                    let mut msg = Message::signaling(
                        self.ep.config.port_identity,
                        seq,
                        m.header.source_port_identity,
                    );
                    msg.header.domain_number = self.ep.config.domain;
                    let ack = TypedTlv::AckCancel(AcknowledgeCancelUnicastTransmission::new(
                        c.message_type,
                    ));
                    let mut buf = [0u8; 128];
                    if let Ok(n) = write_with_tlvs(&mut buf, &msg, &[ack]) {
                        self.ep.send_general(&buf[..n]);
                    }
                }
                Ok(_) => {}
                Err(_) => TransportCounters::inc(&self.ep.counters.malformed),
            }
        }
    }

    /// Handles one packet; returns what it completed.
    fn handle(&mut self, p: &Packet, now: Instant) -> Option<Event> {
        let m = self.ep.accept(p)?;
        match m.body {
            Body::Announce(b) => {
                self.gm = GmInfo::from_announce(&m.header, &b);
                None
            }
            Body::Signaling(_) => {
                self.signaling(&m, now);
                None
            }
            Body::Sync(b) if p.sock == Sock::Event => {
                let Some(t2) = p.rx_local_ns else {
                    TransportCounters::inc(&self.ep.counters.malformed);
                    return None;
                };
                let (seq, source, cf) = (
                    m.header.sequence_id,
                    m.header.source_port_identity,
                    m.header.correction,
                );
                if !m.header.flags.contains(Flags::TWO_STEP) {
                    let t1 = ns(b.origin_timestamp)?;
                    return Some(Event::Sync(t1, t2, cf));
                }
                if let Some(f) = self.follow_up.take()
                    && f.seq == seq
                    && f.source == source
                {
                    return Some(Event::Sync(f.t1, t2, cf.saturating_add(f.cf)));
                }
                self.sync = Some(PendingSync {
                    seq,
                    t2,
                    cf,
                    source,
                });
                None
            }
            Body::FollowUp(b) => {
                let Some(t1) = ns(b.precise_origin_timestamp) else {
                    TransportCounters::inc(&self.ep.counters.malformed);
                    return None;
                };
                let (seq, source, cf) = (
                    m.header.sequence_id,
                    m.header.source_port_identity,
                    m.header.correction,
                );
                if let Some(s) = self.sync.take()
                    && s.seq == seq
                    && s.source == source
                {
                    return Some(Event::Sync(t1, s.t2, s.cf.saturating_add(cf)));
                }
                self.follow_up = Some(PendingFollowUp {
                    seq,
                    t1,
                    cf,
                    source,
                });
                None
            }
            Body::DelayResp(b) => {
                if b.requesting_port_identity != self.ep.config.port_identity {
                    self.ep.unmatched();
                    return None;
                }
                let t4 = ns(b.receive_timestamp)?;
                Some(Event::DelayResp(
                    m.header.sequence_id,
                    t4,
                    m.header.correction,
                ))
            }
            _ => {
                self.ep.unmatched();
                None
            }
        }
    }
}

impl Transport for UnicastClient {
    fn exchange(&mut self, timeout: Duration, stop: &AtomicBool) -> Outcome {
        let deadline = Instant::now() + timeout;
        // What queued up while we were away: grants and Announces count,
        // Syncs are stale (only a fresh Sync keeps t2 − t3 short).
        while let Some(p) = self.ep.try_recv() {
            if let Some(Event::Sync(..) | Event::DelayResp(..)) = self.handle(&p, Instant::now()) {
                self.ep.unmatched();
            }
        }
        self.sync = None;
        self.follow_up = None;
        let (t1, t2, cf_sync) = loop {
            let now = Instant::now();
            self.maintain(now);
            if now >= deadline {
                return Outcome::Lost(Loss::Timeout);
            }
            let p = match self.ep.recv_until(deadline.min(now + RX_POLL), stop) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(l) => return Outcome::Lost(l),
            };
            match self.handle(&p, Instant::now()) {
                Some(Event::Sync(t1, t2, cf)) => break (t1, t2, cf),
                Some(Event::DelayResp(..)) => self.ep.unmatched(),
                None => {}
            }
        };
        self.delay_req_seq = self.delay_req_seq.wrapping_add(1);
        let seq = self.delay_req_seq;
        let mut req = Message::delay_req(self.ep.config.port_identity, seq, Timestamp::ZERO);
        req.header.domain_number = self.ep.config.domain;
        let mut buf = [0u8; 64];
        let Ok(n) = req.write(&mut buf) else {
            return Outcome::Lost(Loss::SendFailed);
        };
        let t3 = match self.ep.send_timestamped(&buf[..n], self.ep.config.server) {
            Ok(t) => t,
            Err(l) => return Outcome::Lost(l),
        };
        let answer_by = Instant::now() + self.ep.config.response_timeout;
        loop {
            let p = match self.ep.recv_until(answer_by, stop) {
                Ok(Some(p)) => p,
                Ok(None) => return Outcome::Lost(Loss::Timeout),
                Err(l) => return Outcome::Lost(l),
            };
            match self.handle(&p, Instant::now()) {
                Some(Event::DelayResp(s, t4, cf_req)) if s == seq => {
                    return Outcome::Complete(Exchange {
                        t1,
                        t2,
                        t3,
                        t4,
                        cf_sync,
                        cf_req,
                        gm: self.gm,
                    });
                }
                Some(_) => self.ep.unmatched(),
                None => {}
            }
        }
    }

    fn server_paced(&self) -> bool {
        true
    }

    fn counters(&self) -> Arc<TransportCounters> {
        self.ep.counters.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use ptp_proto::ClockIdentity;

    fn config(server: SocketAddr) -> TransportConfig {
        TransportConfig {
            server,
            server_general_port: server.port() + 1,
            local_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            local_event_port: 0,
            local_general_port: None,
            port_identity: PortIdentity::new(ClockIdentity::from_u64(0x1122_33ff_fe44_5566), 0x100),
            domain: 0,
            log_interval: 0,
            unicast_duration_s: 60,
            response_timeout: Duration::from_millis(100),
        }
    }

    #[test]
    fn sptp_times_out_against_a_silent_server_and_counts_garbage() {
        // A server that answers garbage and nothing else.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut c =
            SptpClient::open(config(silent.local_addr().unwrap()), Arc::new(SystemClock)).unwrap();
        let me = c.local_event_addr().unwrap();
        silent.send_to(b"not ptp", me).unwrap();
        let t = Instant::now();
        let stop = AtomicBool::new(false);
        assert_eq!(
            c.exchange(Duration::from_millis(150), &stop),
            Outcome::Lost(Loss::Timeout)
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        let t = Instant::now();
        assert_eq!(
            c.exchange(Duration::from_secs(30), &stop),
            Outcome::Lost(Loss::Stopped)
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        let mut buf = [0u8; 128];
        let (n, _) = silent.recv_from(&mut buf).unwrap();
        let m = Message::parse(&buf[..n]).unwrap();
        assert!(m.header.is_sptp_request());
        assert_eq!(m.header.source_port_identity.port_number, 0x100);
        let s = c.counters().snapshot();
        assert_eq!(s.received, 1);
        assert_eq!(s.malformed + s.unmatched, 1, "{s:?}");
    }

    #[test]
    fn unicast_needs_a_general_port() {
        let e = UnicastClient::open(
            config("127.0.0.1:9".parse().unwrap()),
            Arc::new(SystemClock),
        )
        .unwrap_err();
        assert!(matches!(e, TransportError::NoGeneralPort));
    }
}
