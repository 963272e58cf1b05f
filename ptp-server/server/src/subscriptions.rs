//! Unicast negotiation and the subscription table, free of sockets and clocks.
//!
//! A client asks for a stream with `REQUEST_UNICAST_TRANSMISSION` (message
//! type, log interval, duration). [`decide`] answers it the way a linuxptp
//! unicast client expects: a grant echoes the requested interval, and the
//! duration capped at the configured maximum; a refusal is a grant with
//! duration 0 (interval outside the limits, an unsupported message type, or
//! the server draining).
//!
//! Each send worker owns one [`Table`] for the clients hashed to it. The table
//! keeps every (client, message type) subscription with its own sequence
//! counter and a deadline heap; [`Table::next_action`] hands out what is due
//! (a Sync or Announce to send, or a Cancel for an expired stream), with time
//! passed in.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;

use ptp_proto::{MessageType, PortIdentity, RequestUnicastTransmission};

/// A grant ends this long after its duration (linuxptp's grantor allows up to
/// 1 s), so a renewal that arrives just late does not interrupt the stream.
pub const EXPIRY_GRACE_NS: i64 = 1_000_000_000;

/// Negotiation limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Smallest log2 interval granted (fastest rate), e.g. −7 = 128/s.
    pub min_log_interval: i8,
    /// Largest log2 interval granted (slowest rate).
    pub max_log_interval: i8,
    /// Longest grant, seconds.
    pub max_duration_s: u32,
}

impl Default for Limits {
    fn default() -> Self {
        // ptp4u: minsubinterval 1 s, maxsubduration 1 h; we also allow faster
        // rates down to 1/128 s, which linuxptp clients commonly request.
        Self {
            min_log_interval: -7,
            max_log_interval: 6,
            max_duration_s: 3600,
        }
    }
}

/// The answer to one request TLV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Grant with this log interval and duration.
    Grant {
        /// Granted log2 interval (always the requested one).
        log_interval: i8,
        /// Granted duration, seconds.
        duration_s: u32,
    },
    /// Refuse (sent as a grant with duration 0).
    Deny {
        /// Why, for logs and statistics.
        reason: DenyReason,
    },
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// The server is draining.
    Draining,
    /// Only Announce, Sync and Delay_Resp are served.
    UnsupportedType,
    /// The interval is outside the configured limits.
    IntervalOutOfRange,
    /// A zero duration asks for nothing.
    ZeroDuration,
    /// The server holds `max_streams` streams already.
    OverCapacity,
}

/// Decides one request.
#[must_use]
pub fn decide(req: &RequestUnicastTransmission, limits: &Limits, draining: bool) -> Decision {
    let deny = |reason| Decision::Deny { reason };
    if draining {
        return deny(DenyReason::Draining);
    }
    if !matches!(
        req.message_type,
        MessageType::Announce | MessageType::Sync | MessageType::DelayResp
    ) {
        return deny(DenyReason::UnsupportedType);
    }
    if !(limits.min_log_interval..=limits.max_log_interval).contains(&req.log_inter_message_period)
    {
        return deny(DenyReason::IntervalOutOfRange);
    }
    if req.duration_s == 0 {
        return deny(DenyReason::ZeroDuration);
    }
    Decision::Grant {
        log_interval: req.log_inter_message_period,
        duration_s: req.duration_s.min(limits.max_duration_s),
    }
}

/// Key of one subscription.
pub type Key = (PortIdentity, MessageType);

/// One granted stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Where Sync goes (client IP, port 319).
    pub event_addr: SocketAddr,
    /// Where Announce, Follow_Up, Delay_Resp and Signaling go.
    pub general_addr: SocketAddr,
    /// Granted log2 interval.
    pub log_interval: i8,
    /// Expiry, ns (caller's monotonic clock).
    pub expires_ns: i64,
    /// Next send, ns.
    pub next_ns: i64,
    /// Sequence id of the next message of this stream.
    pub sequence_id: u16,
}

/// Something due now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the next Sync (+ Follow_Up) or Announce of this stream.
    Send(Key),
    /// The stream expired: the caller removes it with [`Table::cancel`]
    /// (its schedule entry is spent; it is not reported again).
    Expired(Key),
}

/// Interval in ns of a log2 interval.
#[must_use]
pub fn interval_ns(log_interval: i8) -> i64 {
    let e = i32::from(log_interval).clamp(-30, 30);
    if e >= 0 {
        1_000_000_000i64 << e
    } else {
        1_000_000_000i64 >> (-e)
    }
}

/// The subscriptions of one worker.
#[derive(Debug, Default)]
pub struct Table {
    subs: HashMap<Key, Subscription>,
    due: BinaryHeap<Reverse<(i64, Key)>>,
    counts: [usize; 3],
}

fn count_slot(t: MessageType) -> Option<usize> {
    match t {
        MessageType::Announce => Some(0),
        MessageType::Sync => Some(1),
        MessageType::DelayResp => Some(2),
        _ => None,
    }
}

impl Table {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live subscriptions.
    #[must_use]
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Live subscriptions of one message type.
    #[must_use]
    pub fn count(&self, t: MessageType) -> usize {
        count_slot(t).map_or(0, |i| self.counts[i])
    }

    fn removed(&mut self, t: MessageType) {
        if let Some(i) = count_slot(t) {
            self.counts[i] -= 1;
        }
    }

    /// Looks a subscription up.
    #[must_use]
    pub fn get(&self, key: &Key) -> Option<&Subscription> {
        self.subs.get(key)
    }

    /// Mutable access (sequence ids, addresses).
    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Subscription> {
        self.subs.get_mut(key)
    }

    /// Adds or renews a granted stream at `now_ns`. A new Sync or Announce
    /// stream is due at once; a renewal keeps its schedule and sequence ids but
    /// takes the new interval, expiry and (ptp4u-style) general address.
    /// Returns true if the stream is new, false for a renewal.
    pub fn grant(
        &mut self,
        key: Key,
        now_ns: i64,
        log_interval: i8,
        duration_s: u32,
        event_addr: SocketAddr,
        general_addr: SocketAddr,
    ) -> bool {
        let expires_ns = now_ns + i64::from(duration_s) * 1_000_000_000;
        match self.subs.get_mut(&key) {
            Some(s) => {
                s.log_interval = log_interval;
                s.expires_ns = expires_ns;
                s.general_addr = general_addr;
                s.event_addr = event_addr;
                let deadline = expires_ns + EXPIRY_GRACE_NS;
                if key.1 == MessageType::DelayResp && deadline < s.next_ns {
                    // A shorter renewal: check expiry at the new, earlier time.
                    s.next_ns = deadline;
                    self.due.push(Reverse((deadline, key)));
                }
                false
            }
            None => {
                if let Some(i) = count_slot(key.1) {
                    self.counts[i] += 1;
                }
                // Delay_Resp streams are answered per request; only their
                // expiry is timed.
                let next_ns = if key.1 == MessageType::DelayResp {
                    expires_ns + EXPIRY_GRACE_NS
                } else {
                    now_ns
                };
                self.subs.insert(
                    key,
                    Subscription {
                        event_addr,
                        general_addr,
                        log_interval,
                        expires_ns,
                        next_ns,
                        sequence_id: 0,
                    },
                );
                self.due.push(Reverse((next_ns, key)));
                true
            }
        }
    }

    /// Cancels a stream; returns whether it existed.
    pub fn cancel(&mut self, key: &Key) -> bool {
        let found = self.subs.remove(key).is_some();
        if found {
            self.removed(key.1);
        }
        found
    }

    /// Removes every stream (drain, shutdown) and returns their keys.
    pub fn cancel_all(&mut self) -> Vec<(Key, Subscription)> {
        self.due.clear();
        self.counts = [0; 3];
        self.subs.drain().collect()
    }

    /// The earliest deadline, if any (stale heap entries may make it early).
    #[must_use]
    pub fn next_deadline(&self) -> Option<i64> {
        self.due.peek().map(|Reverse((t, _))| *t)
    }

    /// The next thing due at `now_ns`, if any. Call until `None`. An expired
    /// stream stays in the table until [`Table::cancel`] removes it, so the
    /// caller can still read it (to log it, or to send a CANCEL).
    pub fn next_action(&mut self, now_ns: i64) -> Option<Action> {
        while let Some(Reverse((t, key))) = self.due.peek().copied() {
            if t > now_ns {
                return None;
            }
            self.due.pop();
            let Some(sub) = self.subs.get_mut(&key) else {
                continue; // cancelled
            };
            // `next_ns` is the time of the stream's one live heap entry;
            // anything else is left over from a cancelled or replaced stream
            // of the same key (without this check a client that cancels and
            // re-requests could grow the heap without bound).
            if sub.next_ns != t {
                continue;
            }
            if now_ns >= sub.expires_ns + EXPIRY_GRACE_NS {
                return Some(Action::Expired(key));
            }
            if key.1 == MessageType::DelayResp {
                // Re-arm the expiry check at the (renewed) expiry.
                let e = sub.expires_ns + EXPIRY_GRACE_NS;
                sub.next_ns = e;
                self.due.push(Reverse((e, key)));
                continue;
            }
            // Next send: one interval later, but never bunch up after a stall.
            let step = interval_ns(sub.log_interval);
            let mut next = t + step;
            if next <= now_ns {
                next = now_ns + step;
            }
            sub.next_ns = next;
            self.due.push(Reverse((next, key)));
            return Some(Action::Send(key));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptp_proto::ClockIdentity;

    fn req(t: MessageType, log: i8, d: u32) -> RequestUnicastTransmission {
        RequestUnicastTransmission {
            message_type: t,
            log_inter_message_period: log,
            duration_s: d,
        }
    }

    fn port(n: u8) -> PortIdentity {
        PortIdentity::new(ClockIdentity([n; 8]), 1)
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn grants_echo_interval_and_cap_duration() {
        let l = Limits::default();
        assert_eq!(
            decide(&req(MessageType::Sync, -4, 300), &l, false),
            Decision::Grant {
                log_interval: -4,
                duration_s: 300
            }
        );
        assert_eq!(
            decide(&req(MessageType::Announce, 1, 100_000), &l, false),
            Decision::Grant {
                log_interval: 1,
                duration_s: 3600
            }
        );
        for (r, why) in [
            (
                req(MessageType::Sync, -8, 60),
                DenyReason::IntervalOutOfRange,
            ),
            (
                req(MessageType::Sync, 7, 60),
                DenyReason::IntervalOutOfRange,
            ),
            (
                req(MessageType::Management, 0, 60),
                DenyReason::UnsupportedType,
            ),
            (req(MessageType::DelayResp, 0, 0), DenyReason::ZeroDuration),
        ] {
            assert_eq!(decide(&r, &l, false), Decision::Deny { reason: why });
        }
        assert_eq!(
            decide(&req(MessageType::Sync, 0, 60), &l, true),
            Decision::Deny {
                reason: DenyReason::Draining
            }
        );
    }

    #[test]
    fn streams_fire_on_schedule_and_expire() {
        let mut t = Table::new();
        let a: SocketAddr = "127.0.0.1:319".parse().unwrap();
        let g: SocketAddr = "127.0.0.1:320".parse().unwrap();
        let k = (port(1), MessageType::Sync);
        t.grant(k, 0, -1, 2, a, g);
        let mut sends = Vec::new();
        let mut now = 0;
        let mut expired = None;
        while now <= 4 * S {
            while let Some(act) = t.next_action(now) {
                match act {
                    Action::Send(key) => sends.push((now, key)),
                    Action::Expired(key) => {
                        expired = Some((now, key));
                        break;
                    }
                }
            }
            now += S / 10;
        }
        assert_eq!(sends.len(), 6, "2 s at 2/s, plus the 1 s grace: {sends:?}");
        assert_eq!(sends[1].0, S / 2);
        assert_eq!(expired, Some((2 * S + EXPIRY_GRACE_NS, k)));
        assert_eq!(t.count(MessageType::Sync), 1);
        assert!(t.cancel(&k));
        assert!(t.is_empty());
        assert_eq!(t.count(MessageType::Sync), 0);
    }

    #[test]
    fn renewal_keeps_schedule_and_cancel_stops() {
        let mut t = Table::new();
        let a: SocketAddr = "127.0.0.1:319".parse().unwrap();
        let g: SocketAddr = "127.0.0.1:320".parse().unwrap();
        let g2: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let k = (port(2), MessageType::Announce);
        t.grant(k, 0, 0, 10, a, g);
        assert_eq!(t.next_action(0), Some(Action::Send(k)));
        t.get_mut(&k).unwrap().sequence_id = 5;
        t.grant(k, S / 2, 0, 10, a, g2);
        assert_eq!(t.next_action(S / 2), None, "renewal does not fire early");
        assert_eq!(t.next_action(S), Some(Action::Send(k)));
        assert_eq!(t.get(&k).unwrap().sequence_id, 5);
        assert_eq!(t.get(&k).unwrap().general_addr, g2);
        assert!(t.cancel(&k));
        assert_eq!(t.next_action(10 * S), None);
        let d = (port(3), MessageType::DelayResp);
        t.grant(d, 0, 0, 1, a, g);
        assert_eq!(t.next_action(S / 2), None, "Delay_Resp streams do not tick");
        assert_eq!(t.next_action(S), None, "grace after the grant");
        assert_eq!(t.next_action(S + EXPIRY_GRACE_NS), Some(Action::Expired(d)));
        assert!(t.cancel(&d));
    }

    #[test]
    fn cancel_and_request_again_does_not_grow_the_heap() {
        let mut t = Table::new();
        let a: SocketAddr = "127.0.0.1:319".parse().unwrap();
        let d = (port(5), MessageType::DelayResp);
        for i in 0..1000 {
            assert!(t.grant(d, i, 0, 3600, a, a));
            assert!(t.cancel(&d));
        }
        assert!(t.grant(d, 1000, 0, 3600, a, a));
        // Stale entries are skipped when they come due, not re-armed.
        assert_eq!(t.next_action(3600 * S + EXPIRY_GRACE_NS + 999), None);
        assert!(t.due.len() <= 1, "{} heap entries", t.due.len());
        assert_eq!(
            t.next_action(3600 * S + EXPIRY_GRACE_NS + 1000),
            Some(Action::Expired(d))
        );
        // Renewals re-arm once; a shorter renewal expires on time.
        assert!(t.cancel(&d));
        assert!(t.grant(d, 0, 0, 100, a, a));
        for i in 1..50 {
            assert!(!t.grant(d, i, 0, 100, a, a));
        }
        assert!(!t.grant(d, 50, 0, 1, a, a));
        assert_eq!(
            t.next_action(50 + S + EXPIRY_GRACE_NS),
            Some(Action::Expired(d))
        );
        assert!(t.due.len() <= 2);
    }

    #[test]
    fn a_stalled_worker_does_not_burst() {
        let mut t = Table::new();
        let a: SocketAddr = "127.0.0.1:319".parse().unwrap();
        let k = (port(4), MessageType::Sync);
        t.grant(k, 0, 0, 3600, a, a);
        assert_eq!(t.next_action(0), Some(Action::Send(k)));
        assert_eq!(t.next_action(10 * S), Some(Action::Send(k)));
        assert_eq!(
            t.next_action(10 * S),
            None,
            "one send after a stall, not ten"
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(interval_ns(0), S);
        assert_eq!(interval_ns(-4), S / 16);
        assert_eq!(interval_ns(2), 4 * S);
    }
}
