//! Receive workers: one thread per `SO_REUSEPORT` socket on 319 and 320.
//!
//! Event port: Delay_Req (two-step or SPTP) is timestamped by the kernel and
//! handed to the send worker that owns the client. General port: Signaling is
//! negotiated here (the grant goes straight back from port 320) and the
//! resulting stream handed to the owning worker. Anything malformed is counted
//! and dropped without a reply, so hostile input never amplifies.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use ptp_proto::{
    AcknowledgeCancelUnicastTransmission, ClockIdentity, Message, MessageType, MessageWriter,
    PortIdentity, TypedTlv,
};

use crate::net::{PtpSocket, Received};
use crate::stats::Stats;
use crate::subscriptions::{Decision, DenyReason, Limits, decide};
use crate::worker::Command;

/// Which worker owns a client: a hash of its port identity (as ptp4u does).
#[must_use]
pub fn worker_for(client: &PortIdentity, workers: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    client.hash(&mut h);
    (h.finish() % workers.max(1) as u64) as usize
}

/// Shared state the receivers need.
#[derive(Debug)]
pub struct RxShared {
    /// Command queues of the send workers.
    pub workers: Vec<SyncSender<Command>>,
    /// Statistics.
    pub stats: Arc<Stats>,
    /// Negotiation limits.
    pub limits: Limits,
    /// Refuse new grants and ignore Delay_Req (shared with the send workers,
    /// which drop grants that reach them after a drain began).
    pub draining: Arc<AtomicBool>,
    /// Stop the receive loops.
    pub stop: AtomicBool,
    /// Our clock identity.
    pub clock_identity: ClockIdentity,
    /// Our domain; other domains are ignored.
    pub domain: u8,
    /// Port on clients that Sync goes to.
    pub client_event_port: u16,
    /// Maximum number of live streams (bounds memory under request floods).
    pub max_streams: u64,
}

impl RxShared {
    /// Hands `cmd` to the worker that owns `client`; false if its queue is
    /// full (the command is dropped and counted).
    fn dispatch(&self, client: &PortIdentity, cmd: Command) -> bool {
        let w = worker_for(client, self.workers.len());
        match self.workers[w].try_send(cmd) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.queue_drops.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Takes one of the `max_streams` slots for a grant on its way to a
    /// worker. The worker gives it back when the grant turns out to renew a
    /// stream it already has, and when a stream ends. Counting at grant time
    /// (not from the workers' gauges, which lag behind their queues) is what
    /// keeps a request flood from overshooting the limit. At the limit a
    /// renewal is refused too (the receiver cannot tell it from a new
    /// stream without a lookup in the worker's table); the stream then runs
    /// to the end of its current grant.
    fn reserve_stream(&self) -> bool {
        self.stats
            .streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_streams).then_some(n + 1)
            })
            .is_ok()
    }

    fn release_stream(&self) {
        self.stats.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Books one received datagram: adds the socket's new kernel drops (the
/// `SO_RXQ_OVFL` counter is cumulative per socket, `last` is this socket's
/// previous value, so the statistic is the sum over all sockets) and rejects
/// a datagram longer than the buffer as malformed (its tail is gone).
fn account(rx: &Received, last: &mut u32, stats: &Stats) -> bool {
    if let Some(d) = rx.drops {
        stats
            .rx_kernel_drops
            .fetch_add(u64::from(d.wrapping_sub(*last)), Ordering::Relaxed);
        *last = d;
    }
    if rx.truncated {
        stats.malformed.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    true
}

/// The receive loop shared by both ports: receive, account, parse, count,
/// and hand messages of type `wanted` in our domain to `handle`.
fn receive_loop(
    socket: &PtpSocket,
    shared: &RxShared,
    wanted: MessageType,
    mut handle: impl FnMut(&Message<'_>, &crate::net::Received),
) {
    let mut buf = [0u8; 1500];
    let mut drops = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(rx) = socket.recv(&mut buf) else {
            continue;
        };
        if !account(&rx, &mut drops, &shared.stats) {
            continue;
        }
        let Ok(msg) = Message::parse(&buf[..rx.len]) else {
            shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        shared.stats.rx.inc(msg.message_type());
        if msg.message_type() == wanted && msg.header.domain_number == shared.domain {
            handle(&msg, &rx);
        }
    }
}

/// Receive loop of an event-port (319) socket.
pub fn run_event(socket: &PtpSocket, shared: &RxShared) {
    receive_loop(socket, shared, MessageType::DelayReq, |msg, rx| {
        if shared.draining.load(Ordering::Relaxed) {
            return;
        }
        let Some(rx_host_ns) = rx.timestamp_ns else {
            shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let client = msg.header.source_port_identity;
        shared.dispatch(
            &client,
            Command::DelayReq {
                header: msg.header,
                rx_host_ns,
                from: rx.from,
            },
        );
    });
}

/// Receive loop of a general-port (320) socket.
pub fn run_general(socket: &PtpSocket, shared: &RxShared) {
    let mut out = [0u8; 1500];
    receive_loop(socket, shared, MessageType::Signaling, |msg, rx| {
        if let Some(n) = negotiate(msg, rx.from, shared, &mut out) {
            if socket.send_to(&out[..n], rx.from).is_ok() {
                shared.stats.tx.inc(MessageType::Signaling);
            } else {
                shared.stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// Handles one Signaling message; writes the reply (grants and cancel
/// acknowledgements) into `out` and returns its length, if any.
fn negotiate(
    msg: &Message<'_>,
    from: SocketAddr,
    shared: &RxShared,
    out: &mut [u8],
) -> Option<usize> {
    let client = msg.header.source_port_identity;
    let src = PortIdentity::new(shared.clock_identity, 1);
    let reply = Message::signaling_reply(src, &msg.header);
    let mut w = MessageWriter::new(out, &reply).ok()?;
    // A message with any broken TLV is dropped whole: acting on the TLVs
    // before the broken one would start streams nobody was told about.
    if msg.tlvs.typed().any(|t| t.is_err()) {
        shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let mut replies = 0;
    let draining = shared.draining.load(Ordering::Relaxed);
    for typed in msg.tlvs.typed().flatten() {
        match typed {
            TypedTlv::Request(req) => {
                let mut decision = decide(&req, &shared.limits, draining);
                if matches!(decision, Decision::Grant { .. }) && !shared.reserve_stream() {
                    shared.stats.over_capacity.fetch_add(1, Ordering::Relaxed);
                    decision = Decision::Deny {
                        reason: DenyReason::OverCapacity,
                    };
                }
                let granted = match decision {
                    Decision::Grant {
                        log_interval,
                        duration_s,
                    } => {
                        let handed = shared.dispatch(
                            &client,
                            Command::Grant {
                                key: (client, req.message_type),
                                log_interval,
                                duration_s,
                                event_addr: SocketAddr::new(from.ip(), shared.client_event_port),
                                general_addr: from,
                            },
                        );
                        if !handed {
                            // The worker never saw it: do not claim a grant.
                            shared.release_stream();
                        }
                        handed.then_some(ptp_proto::GrantUnicastTransmission {
                            message_type: req.message_type,
                            log_inter_message_period: log_interval,
                            duration_s,
                            renewal_invited: true,
                        })
                    }
                    Decision::Deny { .. } => None,
                };
                let grant = if let Some(g) = granted {
                    shared.stats.grants.inc(req.message_type);
                    g
                } else {
                    shared.stats.refusals.inc(req.message_type);
                    req.deny()
                };
                w.push_tlv(&TypedTlv::Grant(grant)).ok()?;
                replies += 1;
            }
            TypedTlv::Cancel(c) => {
                shared.stats.cancels_rx.inc(c.message_type);
                // Acknowledge only what the worker will act on.
                if shared.dispatch(&client, Command::Cancel((client, c.message_type))) {
                    w.push_tlv(&TypedTlv::AckCancel(
                        AcknowledgeCancelUnicastTransmission::new(c.message_type),
                    ))
                    .ok()?;
                    replies += 1;
                }
            }
            _ => {}
        }
    }
    (replies > 0).then(|| w.finish())
}
