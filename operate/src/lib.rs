//! What every timecard daemon shares so that operators can run them alike:
//! a `--config FILE` that maps onto the daemon's own flags ([`config`]), the log
//! format ([`logging`]) and Prometheus metrics in one naming scheme ([`metrics`]).

pub mod config;
pub mod logging;
pub mod metrics;
