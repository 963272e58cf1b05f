//! Unicast negotiation as ptp-server runs it: any Signaling datagram's
//! REQUEST / CANCEL_UNICAST_TRANSMISSION TLVs go through the grant decision
//! and the subscription table, whose schedule is then run for a while. No
//! input may panic (overflowing deadlines, extreme intervals, counts).
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use ptp_proto::TypedTlv;
use ptp_server::subscriptions::{Action, Decision, Limits, Table, decide, interval_ns};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, packet)) = data.split_first() else {
        return;
    };
    let Ok(message) = ptp_proto::parse(packet) else {
        return;
    };
    let limits = Limits::default();
    let mut table = Table::new();
    let peer = message.header.source_port_identity;
    let event = SocketAddr::from((Ipv4Addr::LOCALHOST, 319));
    let general = SocketAddr::from((Ipv4Addr::LOCALHOST, 320));
    // A monotonic clock anywhere in a century of uptime.
    let mut now: i64 = i64::from(message.header.sequence_id) * 1_000_000_000 * 48_000;
    for tlv in message.tlvs.typed().flatten() {
        match tlv {
            TypedTlv::Request(req) => {
                if let Decision::Grant {
                    log_interval,
                    duration_s,
                } = decide(&req, &limits, flags & 1 == 1)
                {
                    table.grant(
                        (peer, req.message_type),
                        now,
                        log_interval,
                        duration_s,
                        event,
                        general,
                    );
                }
            }
            TypedTlv::Cancel(c) => {
                table.cancel(&(peer, c.message_type));
            }
            _ => {}
        }
    }
    // Run the schedule: sends and expiries, at most a bounded number.
    for _ in 0..256 {
        let Some(next) = table.next_deadline() else {
            break;
        };
        now = now.max(next);
        match table.next_action(now) {
            Some(Action::Send(key)) => {
                let s = table.get(&key).expect("a stream due is in the table");
                assert!(interval_ns(s.log_interval) > 0);
            }
            Some(Action::Expired(key)) => {
                // As the server's worker does: an expired stream is removed.
                assert!(table.cancel(&key), "an expired stream is in the table");
                assert!(table.get(&key).is_none());
            }
            None => now = now.saturating_add(1_000_000),
        }
    }
});
