//! Counters and gauges of the server, as JSON (ptp4u's flat map) and as
//! Prometheus text (`timecard_ptp_server_*`, see [`operate::metrics`]).
//!
//! Everything is an atomic updated on the hot path without locks.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use operate::metrics::Exposition;
use ptp_proto::MessageType;

/// Message types the server counts, in a fixed order.
pub const COUNTED: [MessageType; 6] = [
    MessageType::Sync,
    MessageType::DelayReq,
    MessageType::FollowUp,
    MessageType::DelayResp,
    MessageType::Announce,
    MessageType::Signaling,
];

fn slot(t: MessageType) -> Option<usize> {
    COUNTED.iter().position(|c| *c == t)
}

fn label(t: MessageType) -> &'static str {
    match t {
        MessageType::Sync => "sync",
        MessageType::DelayReq => "delay_req",
        MessageType::FollowUp => "follow_up",
        MessageType::DelayResp => "delay_resp",
        MessageType::Announce => "announce",
        MessageType::Signaling => "signaling",
        _ => "other",
    }
}

/// A per-message-type counter array.
#[derive(Debug, Default)]
pub struct PerType([AtomicU64; 6]);

impl PerType {
    /// Adds one for `t` (ignored for uncounted types).
    pub fn inc(&self, t: MessageType) {
        if let Some(i) = slot(t) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets the value for `t` (gauges).
    pub fn set(&self, t: MessageType, v: u64) {
        if let Some(i) = slot(t) {
            self.0[i].store(v, Ordering::Relaxed);
        }
    }

    /// Value for `t`.
    #[must_use]
    pub fn get(&self, t: MessageType) -> u64 {
        slot(t).map_or(0, |i| self.0[i].load(Ordering::Relaxed))
    }
}

/// All server statistics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages received, per type.
    pub rx: PerType,
    /// Messages sent, per type.
    pub tx: PerType,
    /// Live subscriptions per worker, per type (gauges set by each worker).
    pub worker_subscriptions: Vec<PerType>,
    /// Grants sent, per type.
    pub grants: PerType,
    /// Refusals sent (grant with duration 0), per type.
    pub refusals: PerType,
    /// CANCEL received, per type.
    pub cancels_rx: PerType,
    /// CANCEL sent (expiry, drain), per type.
    pub cancels_tx: PerType,
    /// SPTP exchanges answered.
    pub sptp: AtomicU64,
    /// Packets that did not parse.
    pub malformed: AtomicU64,
    /// Delay_Req without a Delay_Resp subscription.
    pub unsubscribed_delay_req: AtomicU64,
    /// Work dropped because a worker queue was full.
    pub queue_drops: AtomicU64,
    /// Requests refused because the subscription limit was reached.
    pub over_capacity: AtomicU64,
    /// Sync sent without a TX timestamp (no Follow_Up).
    pub txts_missing: AtomicU64,
    /// Messages not sent because the card time was unavailable or stale.
    pub no_card_time: AtomicU64,
    /// Send errors.
    pub send_errors: AtomicU64,
    /// Kernel receive-queue drops (SO_RXQ_OVFL, summed over sockets).
    pub rx_kernel_drops: AtomicU64,
    /// Served clockClass.
    pub clock_class: AtomicU64,
    /// Served clockAccuracy.
    pub clock_accuracy: AtomicU64,
    /// Served UTC offset.
    pub utc_offset_s: AtomicI64,
    /// 1 while draining.
    pub draining: AtomicU64,
    /// Streams held over all workers, counting grants still queued to a
    /// worker: the number `max_streams` bounds. Receivers take a slot per
    /// grant; workers give it back when a grant only renewed a stream and
    /// when a stream ends.
    pub streams: AtomicU64,
}

impl Stats {
    /// Statistics for a server with `workers` send workers.
    #[must_use]
    pub fn new(workers: usize) -> Self {
        Self {
            worker_subscriptions: (0..workers).map(|_| PerType::default()).collect(),
            ..Self::default()
        }
    }

    /// Records the quality being announced.
    pub fn record_served(&self, s: crate::quality::Served) {
        self.clock_class
            .store(u64::from(s.clock_class), Ordering::Relaxed);
        self.clock_accuracy
            .store(u64::from(s.clock_accuracy), Ordering::Relaxed);
        self.utc_offset_s
            .store(i64::from(s.utc_offset_s), Ordering::Relaxed);
    }

    /// Live subscriptions of type `t` over all workers.
    #[must_use]
    pub fn subscriptions(&self, t: MessageType) -> u64 {
        self.worker_subscriptions.iter().map(|w| w.get(t)).sum()
    }

    fn pairs(&self) -> Vec<(String, i64)> {
        let mut v = Vec::new();
        let u = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        for t in COUNTED {
            let l = label(t);
            v.push((format!("rx.{l}"), u(self.rx.get(t))));
            v.push((format!("tx.{l}"), u(self.tx.get(t))));
        }
        for t in [
            MessageType::Announce,
            MessageType::Sync,
            MessageType::DelayResp,
        ] {
            let l = label(t);
            v.push((format!("subscriptions.{l}"), u(self.subscriptions(t))));
            v.push((format!("tx.signaling.grant.{l}"), u(self.grants.get(t))));
            v.push((format!("tx.signaling.refuse.{l}"), u(self.refusals.get(t))));
            v.push((
                format!("rx.signaling.cancel.{l}"),
                u(self.cancels_rx.get(t)),
            ));
            v.push((
                format!("tx.signaling.cancel.{l}"),
                u(self.cancels_tx.get(t)),
            ));
        }
        let r = |a: &AtomicU64| u(a.load(Ordering::Relaxed));
        v.push(("sptp".into(), r(&self.sptp)));
        v.push(("rx.malformed".into(), r(&self.malformed)));
        v.push((
            "rx.delay_req.unsubscribed".into(),
            r(&self.unsubscribed_delay_req),
        ));
        v.push(("queue.drops".into(), r(&self.queue_drops)));
        v.push(("subscriptions.total".into(), r(&self.streams)));
        v.push(("subscriptions.over_capacity".into(), r(&self.over_capacity)));
        v.push(("txts.missing".into(), r(&self.txts_missing)));
        v.push(("tx.no_card_time".into(), r(&self.no_card_time)));
        v.push(("tx.errors".into(), r(&self.send_errors)));
        v.push(("rxdrops".into(), r(&self.rx_kernel_drops)));
        v.push(("clockclass".into(), r(&self.clock_class)));
        v.push(("clockaccuracy".into(), r(&self.clock_accuracy)));
        v.push((
            "utcoffset_sec".into(),
            self.utc_offset_s.load(Ordering::Relaxed),
        ));
        v.push(("drain".into(), r(&self.draining)));
        for (i, w) in self.worker_subscriptions.iter().enumerate() {
            let total: u64 = COUNTED.iter().map(|t| w.get(*t)).sum();
            v.push((format!("worker.{i}.subscriptions"), u(total)));
        }
        v
    }

    /// ptp4u-style flat JSON map.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        for (i, (k, v)) in self.pairs().iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "\"{k}\":{v}");
        }
        s.push('}');
        s
    }

    /// Writes the statistics into `m` as `timecard_ptp_server_*` families
    /// (under the PTP server's names, whoever else `m` is for).
    pub fn write_metrics(&self, m: &mut Exposition) {
        m.daemon("ptp_server", env!("CARGO_PKG_VERSION"));
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let per_type =
            |m: &mut Exposition, name: &str, help: &str, c: &PerType, types: &[MessageType]| {
                let mut f = m.counter(name, help);
                for t in types {
                    f.sample(&[("message", label(*t))], c.get(*t));
                }
            };
        per_type(
            m,
            "rx_messages_total",
            "PTP messages received.",
            &self.rx,
            &COUNTED,
        );
        per_type(
            m,
            "tx_messages_total",
            "PTP messages sent.",
            &self.tx,
            &COUNTED,
        );
        let negotiated = [
            MessageType::Announce,
            MessageType::Sync,
            MessageType::DelayResp,
        ];
        let mut f = m.gauge(
            "subscriptions",
            "Live unicast subscriptions (clients served), per message type.",
        );
        for t in negotiated {
            f.sample(&[("message", label(t))], self.subscriptions(t));
        }
        m.gauge(
            "streams",
            "Streams held over all workers, counting grants still queued (what max_streams bounds).",
        )
        .value(r(&self.streams));
        let mut f = m.gauge(
            "worker_subscriptions",
            "Live subscriptions per send worker.",
        );
        for (i, w) in self.worker_subscriptions.iter().enumerate() {
            let total: u64 = COUNTED.iter().map(|t| w.get(*t)).sum();
            f.sample(&[("worker", &i.to_string())], total);
        }
        per_type(
            m,
            "grants_total",
            "Unicast grants sent.",
            &self.grants,
            &negotiated,
        );
        per_type(
            m,
            "refusals_total",
            "Unicast requests refused (grant with duration 0).",
            &self.refusals,
            &negotiated,
        );
        per_type(
            m,
            "cancels_received_total",
            "CANCEL_UNICAST_TRANSMISSION received.",
            &self.cancels_rx,
            &negotiated,
        );
        per_type(
            m,
            "cancels_sent_total",
            "CANCEL_UNICAST_TRANSMISSION sent (expiry, drain).",
            &self.cancels_tx,
            &negotiated,
        );
        for (name, help, value) in [
            (
                "sptp_exchanges_total",
                "SPTP exchanges answered.",
                &self.sptp,
            ),
            (
                "malformed_packets_total",
                "Packets that did not parse.",
                &self.malformed,
            ),
            (
                "unsubscribed_delay_req_total",
                "Delay_Req without a Delay_Resp subscription.",
                &self.unsubscribed_delay_req,
            ),
            (
                "queue_drops_total",
                "Work dropped because a worker queue was full.",
                &self.queue_drops,
            ),
            (
                "over_capacity_total",
                "Requests refused because the subscription limit was reached.",
                &self.over_capacity,
            ),
            (
                "tx_timestamps_missing_total",
                "Sync sent without a TX timestamp (no Follow_Up).",
                &self.txts_missing,
            ),
            (
                "no_card_time_total",
                "Messages not sent because the card time was unavailable or stale.",
                &self.no_card_time,
            ),
            ("send_errors_total", "Send errors.", &self.send_errors),
            (
                "rx_kernel_drops_total",
                "Kernel receive-queue drops (SO_RXQ_OVFL, summed over sockets).",
                &self.rx_kernel_drops,
            ),
        ] {
            m.counter(name, help).value(r(value));
        }
        m.gauge(
            "clock_class",
            "Served clockClass (6 locked, 7 holdover, 248 free-running).",
        )
        .value(r(&self.clock_class));
        m.gauge(
            "clock_accuracy",
            "Served clockAccuracy (IEEE 1588 enumeration).",
        )
        .value(r(&self.clock_accuracy));
        m.gauge("utc_offset_seconds", "Served currentUtcOffset (TAI - UTC).")
            .value(self.utc_offset_s.load(Ordering::Relaxed));
        m.gauge("draining", "1 while draining (no subscriptions served).")
            .value(r(&self.draining));
    }

    /// The server's Prometheus exposition.
    #[must_use]
    pub fn to_prometheus(&self) -> String {
        let mut m = Exposition::new("ptp_server", env!("CARGO_PKG_VERSION"));
        self.write_metrics(&mut m);
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_prometheus_carry_the_same_counters() {
        let s = Stats::default();
        s.rx.inc(MessageType::DelayReq);
        s.grants.inc(MessageType::Sync);
        s.clock_class.store(6, Ordering::Relaxed);
        let j = s.to_json();
        assert!(
            j.contains("\"rx.delay_req\":1") && j.contains("\"tx.signaling.grant.sync\":1"),
            "{j}"
        );
        assert!(j.contains("\"clockclass\":6"));
        let p = s.to_prometheus();
        assert!(
            p.contains("timecard_ptp_server_rx_messages_total{message=\"delay_req\"} 1\n"),
            "{p}"
        );
        assert!(p.contains("timecard_ptp_server_grants_total{message=\"sync\"} 1\n"));
        assert!(p.contains("timecard_ptp_server_clock_class 6\n"));
        assert!(p.contains("timecard_build_info{daemon=\"ptp_server\",version=\""));
    }
}
