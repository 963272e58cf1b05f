//! # ptp-proto — PTPv2.1 (IEEE 1588-2019) wire format over UDP
//!
//! A pure, sans-IO library: bytes in, values out; values in, bytes out. It
//! owns no sockets, clocks, timers or threads, and allocates nothing.
//!
//! ## Contract
//!
//! - **Parsing** ([`parse`]) takes one UDP payload and returns a [`Message`]
//!   whose TLVs borrow from that buffer (zero-copy). Malformed input — short,
//!   wrong version, reserved message type, `messageLength` beyond the
//!   datagram or shorter than the fixed body, bad timestamp, broken TLV chain,
//!   more than [`MAX_TLVS`] TLVs — is a [`ParseError`] value, never a panic.
//!   Octets after `messageLength` are ignored (UDP padding). Reserved fields
//!   are ignored on read and written as zero, as 1588 prescribes. The caller
//!   decides what to do with errors (a server drops and counts them).
//! - **Typed TLVs**: iterate [`Message::tlvs`] and call [`Tlv::typed`] to get
//!   the unicast-negotiation TLVs (request / grant / cancel / ack-cancel) and
//!   management TLVs; unknown types are passed through as [`TypedTlv::Other`].
//! - **Writing** ([`Message::write`], [`MessageWriter`]) encodes into a
//!   caller-provided buffer, computes `messageLength`, and fails with
//!   [`WriteError`] (buffer too small, unencodable field) without panicking.
//!   Builders ([`Message::sync`], [`Message::follow_up`],
//!   [`Message::delay_req`], [`Message::delay_resp`], [`Message::announce`],
//!   [`Message::signaling`], [`Message::signaling_reply`]) fill in the
//!   fields the way facebook/time's ptp4u does.
//! - **Hot path**: build a packet once, then rewrite single fields in place
//!   with [`patch`] (sequenceId, correction, timestamps, …).
//! - Round trip: for every valid message, `parse(write(m)) == m`, and for
//!   every datagram that parses, writing it back reproduces its first
//!   `messageLength` octets except reserved fields (zeroed).
//!
//! Time is integer: [`Timestamp`] (48-bit seconds + ns, timescale as carried
//! by the message — TAI for PTP), [`TimeInterval`] (ns × 2^16).
//!
//! ## Example: answer a unicast request with a grant
//!
//! ```
//! use ptp_proto::*;
//!
//! // REQUEST_UNICAST_TRANSMISSION for Announce from ptp4l 3.1.1.
//! let hex = "0c02003600000400000000000000000000000000f633acfffece549800010000\
//!            057fffffffffffffffffffff00040006b00100000e10";
//! let rx: Vec<u8> = (0..hex.len()).step_by(2)
//!     .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
//!
//! let req_msg = parse(&rx)?;
//! let me = PortIdentity::new(ClockIdentity::from_mac([0x02, 0, 0, 0xaa, 0xbb, 0xcc]), 1);
//! let mut out = [0u8; 128];
//! let mut w = MessageWriter::new(&mut out, &Message::signaling_reply(me, &req_msg.header))?;
//! for tlv in req_msg.tlvs.iter() {
//!     if let TypedTlv::Request(r) = tlv.typed()? {
//!         w.push_tlv(&TypedTlv::Grant(r.grant(true)))?;
//!     }
//! }
//! let n = w.finish();
//! let grant = parse(&out[..n])?;
//! assert_eq!(grant.header.sequence_id, req_msg.header.sequence_id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod header;
pub mod message;
pub mod patch;
pub mod tlv;
pub mod types;
pub mod write;

pub use header::{
    DEFAULT_MINOR_VERSION_PTP, HEADER_LEN, Header, LOG_INTERVAL_UNSPECIFIED, VERSION_PTP,
    control_field, probe_message_type,
};
pub use message::{
    ANNOUNCE_LEN, AnnounceBody, Body, DELAY_REQ_LEN, DELAY_RESP_LEN, DelayReqBody, DelayRespBody,
    FOLLOW_UP_LEN, FollowUpBody, MANAGEMENT_MIN_LEN, ManagementBody, Message, OpaqueBody,
    PDELAY_LEN, ParseError, SIGNALING_MIN_LEN, SYNC_LEN, SignalingBody, SyncBody,
    management_action, parse,
};
pub use tlv::{
    AcknowledgeCancelUnicastTransmission, CancelUnicastTransmission, GrantUnicastTransmission,
    MAX_TLVS, ManagementErrorStatus, ManagementTlv, RequestUnicastTransmission, TLV_HEADER_LEN,
    Tlv, TlvIter, Tlvs, TypedTlv, tlv_type,
};
pub use types::{
    ClockIdentity, ClockQuality, Flags, MessageType, PortIdentity, TimeInterval, TimeSource,
    Timestamp, clock_accuracy, clock_accuracy_from_offset_ns, clock_accuracy_to_ns, clock_class,
};
pub use write::{MessageWriter, WriteError, write_with_tlvs};

/// UDP port for event messages (Sync, Delay_Req, Pdelay_*).
pub const EVENT_PORT: u16 = 319;
/// UDP port for general messages (Follow_Up, Delay_Resp, Announce, Signaling,
/// Management).
pub const GENERAL_PORT: u16 = 320;
