//! Send workers: each owns the subscriptions of the clients hashed to it, two
//! sockets and preallocated packets, and nothing is shared on the hot path
//! but atomics.
//!
//! A worker sleeps until its next deadline or a command from a receiver. A
//! Sync is sent from the worker's event socket with a TX timestamp read back
//! from the socket's error queue, and its Follow_Up carries that timestamp
//! mapped to card time; Announce, Delay_Resp and Signaling leave from the
//! general socket. Packets are templates built once and patched in place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ptp_proto::{
    AnnounceBody, CancelUnicastTransmission, ClockIdentity, ClockQuality, Flags, Header, Message,
    MessageType, PortIdentity, TimeInterval, TimeSource as PtpTimeSource, Timestamp, TypedTlv,
    patch, write_with_tlvs,
};
use tracing::debug;

use crate::net::PtpSocket;
use crate::source::TimeSource;
use crate::stats::{COUNTED, Stats};
use crate::subscriptions::{Action, Key, Table};

/// Work handed to a worker by the receivers and the server.
#[derive(Debug)]
pub enum Command {
    /// A granted (or renewed) stream.
    Grant {
        /// Client and message type.
        key: Key,
        /// Granted log2 interval.
        log_interval: i8,
        /// Granted duration, s.
        duration_s: u32,
        /// Client event address (IP, 319).
        event_addr: SocketAddr,
        /// Client general address (where the request came from).
        general_addr: SocketAddr,
    },
    /// The client cancelled a stream.
    Cancel(Key),
    /// A Delay_Req to answer (two-step Delay_Resp, or SPTP Sync + Announce).
    DelayReq {
        /// The request's header.
        header: Header,
        /// Kernel RX timestamp, host ns.
        rx_host_ns: i64,
        /// Source of the request.
        from: SocketAddr,
    },
    /// Cancel every stream (drain or shutdown), telling each client.
    CancelAll,
}

/// Static settings of a worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Our clock identity.
    pub clock_identity: ClockIdentity,
    /// PTP domain.
    pub domain: u8,
    /// grandmasterPriority1/2.
    pub priority: (u8, u8),
    /// How long to wait for one TX timestamp poll.
    pub txts_timeout: Duration,
    /// How many polls before giving up.
    pub txts_attempts: u32,
    /// Set while the server drains (shared with the receivers). A grant that
    /// reaches the worker after the drain's CancelAll is cancelled at once.
    pub draining: Arc<AtomicBool>,
}

/// Packet templates, patched per send.
struct Templates {
    sync: [u8; ptp_proto::SYNC_LEN],
    follow_up: [u8; ptp_proto::FOLLOW_UP_LEN],
    announce: [u8; ptp_proto::ANNOUNCE_LEN],
    delay_resp: [u8; ptp_proto::DELAY_RESP_LEN],
    signaling: [u8; 64],
}

impl Templates {
    fn new(c: &WorkerConfig) -> Self {
        let src = PortIdentity::new(c.clock_identity, 1);
        let mut t = Self {
            sync: [0; ptp_proto::SYNC_LEN],
            follow_up: [0; ptp_proto::FOLLOW_UP_LEN],
            announce: [0; ptp_proto::ANNOUNCE_LEN],
            delay_resp: [0; ptp_proto::DELAY_RESP_LEN],
            signaling: [0; 64],
        };
        let mut sync = Message::sync(src, 0, Timestamp::ZERO);
        sync.header.domain_number = c.domain;
        sync.write(&mut t.sync).expect("sync template");
        let mut fu = Message::follow_up(src, 0, Timestamp::ZERO, 0);
        fu.header.domain_number = c.domain;
        fu.write(&mut t.follow_up).expect("follow-up template");
        let mut ann = Message::announce(
            src,
            0,
            0,
            AnnounceBody {
                origin_timestamp: Timestamp::ZERO,
                current_utc_offset: 37,
                grandmaster_priority1: c.priority.0,
                grandmaster_clock_quality: ClockQuality {
                    clock_class: 248,
                    clock_accuracy: 0xFE,
                    offset_scaled_log_variance: crate::quality::OFFSET_SCALED_LOG_VARIANCE,
                },
                grandmaster_priority2: c.priority.1,
                grandmaster_identity: c.clock_identity,
                steps_removed: 0,
                time_source: PtpTimeSource::GNSS,
            },
        );
        ann.header.domain_number = c.domain;
        ann.write(&mut t.announce).expect("announce template");
        let mut req = Header::new(MessageType::DelayReq, src);
        req.domain_number = c.domain;
        Message::delay_resp(src, &req, Timestamp::ZERO)
            .write(&mut t.delay_resp)
            .expect("delay-resp template");
        t
    }
}

fn ts(card_ns: i64) -> Option<Timestamp> {
    u64::try_from(card_ns).ok().map(Timestamp::from_nanos)
}

/// One send worker.
pub struct Worker {
    config: WorkerConfig,
    index: usize,
    event: PtpSocket,
    general: PtpSocket,
    time: Arc<dyn TimeSource>,
    stats: Arc<Stats>,
    table: Table,
    templates: Templates,
    epoch: Instant,
    signaling_seq: u16,
}

impl Worker {
    /// A worker with its two sockets.
    #[must_use]
    pub fn new(
        index: usize,
        config: WorkerConfig,
        event: PtpSocket,
        general: PtpSocket,
        time: Arc<dyn TimeSource>,
        stats: Arc<Stats>,
    ) -> Self {
        let templates = Templates::new(&config);
        Self {
            config,
            index,
            event,
            general,
            time,
            stats,
            table: Table::new(),
            templates,
            epoch: Instant::now(),
            signaling_seq: 0,
        }
    }

    fn now(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }

    /// Runs until `stop` is set or the command channel closes, then cancels
    /// every stream (telling each client) and returns.
    pub fn run(mut self, commands: &Receiver<Command>, stop: &AtomicBool) {
        loop {
            if stop.load(Ordering::Relaxed) {
                while let Ok(cmd) = commands.try_recv() {
                    self.handle(cmd);
                }
                self.handle(Command::CancelAll);
                break;
            }
            let now = self.now();
            let timeout = self
                .table
                .next_deadline()
                .map_or(Duration::from_millis(200), |d| {
                    Duration::from_nanos(u64::try_from(d - now).unwrap_or(0))
                        .min(Duration::from_millis(200))
                });
            match commands.recv_timeout(timeout) {
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.handle(Command::CancelAll);
                    break;
                }
            }
            // Take any further queued commands before serving deadlines.
            while let Ok(cmd) = commands.try_recv() {
                self.handle(cmd);
            }
            let now = self.now();
            while let Some(action) = self.table.next_action(now) {
                match action {
                    Action::Send(key) => self.send(key),
                    Action::Expired(key) => {
                        // Expiry is silent, as linuxptp's grantor does: a client that
                        // renews late (ptp4l 3.1 does while waiting for other grants)
                        // simply asks again; CANCEL is kept for drain and shutdown.
                        debug!(worker = self.index, client = %key.0, "subscription expired");
                        if self.table.cancel(&key) {
                            self.release_streams(1);
                        }
                    }
                }
            }
            if let Some(g) = self.stats.worker_subscriptions.get(self.index) {
                for t in COUNTED {
                    g.set(t, self.table.count(t) as u64);
                }
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Grant {
                key,
                log_interval,
                duration_s,
                event_addr,
                general_addr,
            } => {
                if self.config.draining.load(Ordering::Acquire) {
                    // Granted just before the drain began: the client was told
                    // yes, so tell it the stream is over.
                    self.release_streams(1);
                    if self.table.cancel(&key) {
                        self.release_streams(1);
                    }
                    self.send_cancel(key, general_addr);
                    return;
                }
                let now = self.now();
                let new =
                    self.table
                        .grant(key, now, log_interval, duration_s, event_addr, general_addr);
                if !new {
                    // A renewal holds no new slot.
                    self.release_streams(1);
                }
            }
            Command::Cancel(key) => {
                if self.table.cancel(&key) {
                    self.release_streams(1);
                }
            }
            Command::DelayReq {
                header,
                rx_host_ns,
                from,
            } => self.delay_req(&header, rx_host_ns, from),
            Command::CancelAll => {
                let all = self.table.cancel_all();
                self.release_streams(all.len());
                for (key, sub) in all {
                    self.send_cancel(key, sub.general_addr);
                }
            }
        }
    }

    /// Gives back slots of the server-wide stream limit (see
    /// [`Stats::streams`]).
    fn release_streams(&self, n: usize) {
        self.stats.streams.fetch_sub(n as u64, Ordering::AcqRel);
    }

    fn send(&mut self, key: Key) {
        match key.1 {
            MessageType::Sync => self.send_sync(key),
            MessageType::Announce => self.send_announce(key),
            _ => {}
        }
    }

    fn send_sync(&mut self, key: Key) {
        let Some(sub) = self.table.get_mut(&key) else {
            return;
        };
        let seq = sub.sequence_id;
        sub.sequence_id = seq.wrapping_add(1);
        let (event_addr, general_addr, log) = (sub.event_addr, sub.general_addr, sub.log_interval);
        if self.time.card_time(self.time.host_now_ns()).is_none() {
            self.stats.no_card_time.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let t = &mut self.templates;
        let _ = patch::set_sequence_id(&mut t.sync, seq);
        let tx = self.event.send_with_tx_timestamp(
            &t.sync,
            event_addr,
            self.config.txts_timeout,
            self.config.txts_attempts,
        );
        let tx_host = match tx {
            Ok(Some(tx)) => {
                self.stats.tx.inc(MessageType::Sync);
                tx
            }
            Ok(None) => {
                self.stats.tx.inc(MessageType::Sync);
                self.stats.txts_missing.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let Some(t1) = self.time.card_time(tx_host).and_then(ts) else {
            self.stats.no_card_time.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let fu = &mut self.templates.follow_up;
        let _ = patch::set_sequence_id(fu, seq);
        let _ = patch::set_origin_timestamp(fu, t1);
        let _ = patch::set_log_message_interval(fu, log);
        self.send_general_buf(MessageType::FollowUp, general_addr);
    }

    fn send_general_buf(&mut self, t: MessageType, to: SocketAddr) {
        let buf: &[u8] = match t {
            MessageType::FollowUp => &self.templates.follow_up,
            MessageType::Announce => &self.templates.announce,
            MessageType::DelayResp => &self.templates.delay_resp,
            _ => return,
        };
        match self.general.send_to(buf, to) {
            Ok(_) => self.stats.tx.inc(t),
            Err(_) => {
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn patch_announce(&mut self, seq: u16, log: i8, origin: Timestamp, correction: TimeInterval) {
        let served = self.time.served();
        let a = &mut self.templates.announce;
        let _ = patch::set_sequence_id(a, seq);
        let _ = patch::set_log_message_interval(a, log);
        let _ = patch::set_origin_timestamp(a, origin);
        let _ = patch::set_correction(a, correction);
        let _ = patch::set_flags(a, Flags::UNICAST | served.flags);
        let _ = patch::set_current_utc_offset(a, served.utc_offset_s);
        let _ = patch::set_grandmaster_clock_quality(
            a,
            ClockQuality {
                clock_class: served.clock_class,
                clock_accuracy: served.clock_accuracy,
                offset_scaled_log_variance: served.offset_scaled_log_variance,
            },
        );
    }

    fn send_announce(&mut self, key: Key) {
        let Some(sub) = self.table.get_mut(&key) else {
            return;
        };
        let seq = sub.sequence_id;
        sub.sequence_id = seq.wrapping_add(1);
        let (addr, log) = (sub.general_addr, sub.log_interval);
        let Some(now) = self.time.card_time(self.time.host_now_ns()).and_then(ts) else {
            self.stats.no_card_time.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.patch_announce(seq, log, now, TimeInterval::ZERO);
        self.send_general_buf(MessageType::Announce, addr);
    }

    fn delay_req(&mut self, req: &Header, rx_host_ns: i64, from: SocketAddr) {
        let Some(t4) = self.time.card_time(rx_host_ns).and_then(ts) else {
            self.stats.no_card_time.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if req.is_sptp_request() {
            self.sptp(req, t4, from);
            return;
        }
        let key = (req.source_port_identity, MessageType::DelayResp);
        let Some(sub) = self.table.get(&key) else {
            self.stats
                .unsubscribed_delay_req
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let addr = sub.general_addr;
        let d = &mut self.templates.delay_resp;
        let _ = patch::set_sequence_id(d, req.sequence_id);
        let _ = patch::set_correction(d, req.correction);
        let _ = patch::set_domain(d, req.domain_number);
        let _ = patch::set_origin_timestamp(d, t4);
        let _ = patch::set_requesting_port_identity(d, req.source_port_identity);
        self.send_general_buf(MessageType::DelayResp, addr);
    }

    /// SPTP: Sync (origin = T4, same sequence) to the requester, then an
    /// Announce carrying T1 and the request's correction (ptp4u's behaviour).
    fn sptp(&mut self, req: &Header, t4: Timestamp, from: SocketAddr) {
        let t = &mut self.templates;
        let _ = patch::set_sequence_id(&mut t.sync, req.sequence_id);
        let _ = patch::set_origin_timestamp(&mut t.sync, t4);
        let tx = self.event.send_with_tx_timestamp(
            &t.sync,
            from,
            self.config.txts_timeout,
            self.config.txts_attempts,
        );
        let _ = patch::set_origin_timestamp(&mut self.templates.sync, Timestamp::ZERO);
        let t1 = match tx {
            Ok(Some(tx)) => {
                self.stats.tx.inc(MessageType::Sync);
                self.time.card_time(tx).and_then(ts)
            }
            Ok(None) => {
                self.stats.tx.inc(MessageType::Sync);
                self.stats.txts_missing.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(_) => {
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        let Some(t1) = t1 else { return };
        // Announce to port 320, or back to the source port for tools (portNumber > 10).
        let port = if req.source_port_identity.port_number > 10 {
            from.port()
        } else {
            ptp_proto::GENERAL_PORT
        };
        self.patch_announce(req.sequence_id, 0x7F, t1, req.correction);
        self.send_general_buf(MessageType::Announce, SocketAddr::new(from.ip(), port));
        self.stats.sptp.fetch_add(1, Ordering::Relaxed);
    }

    fn send_cancel(&mut self, key: Key, to: SocketAddr) {
        let src = PortIdentity::new(self.config.clock_identity, 1);
        let seq = self.signaling_seq;
        self.signaling_seq = seq.wrapping_add(1);
        let mut msg = Message::signaling(src, seq, key.0);
        msg.header.domain_number = self.config.domain;
        let tlv = TypedTlv::from(CancelUnicastTransmission::new(key.1));
        let Ok(n) = write_with_tlvs(&mut self.templates.signaling, &msg, &[tlv]) else {
            return;
        };
        if self
            .general
            .send_to(&self.templates.signaling[..n], to)
            .is_ok()
        {
            self.stats.tx.inc(MessageType::Signaling);
            self.stats.cancels_tx.inc(key.1);
        }
    }
}
