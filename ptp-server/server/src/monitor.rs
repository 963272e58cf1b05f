//! The monitoring endpoint: `GET /` (ptp4u's flat JSON map) and
//! `GET /metrics` (Prometheus text, `timecard_ptp_server_*`), served by
//! [`operate::metrics::http`].

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use operate::metrics::http::{self, Page};

use crate::stats::Stats;

/// Serves `stats` on `listener` until `stop` is set.
pub fn spawn(
    listener: TcpListener,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    http::spawn(listener, stop, "ptp-monitor", move |path| match path {
        "/" | "/stats" => Some(Page::json(stats.to_json())),
        "/metrics" => Some(Page::metrics(stats.to_prometheus())),
        _ => None,
    })
}
