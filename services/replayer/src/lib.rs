//! The replay service, in the style of Netflix's dedicated replay service:
//! captured production traffic ([`source`]) is sent to a candidate
//! deployment with rate control and optional time scaling ([`run`]), each
//! answer is compared with production's after normalization, and the
//! differences go to an Apache Iceberg table ([`table`]) and a summary
//! report ([`report`]).

pub mod client;
pub mod report;
pub mod run;
pub mod source;
pub mod table;
