//! Property tests (proptest) and a deterministic mutation fuzzer.

mod common;

use common::{check, golden};
use proptest::prelude::*;
use ptp_proto::*;

// ---------- strategies ----------

fn port_identity() -> impl Strategy<Value = PortIdentity> {
    (any::<[u8; 8]>(), any::<u16>()).prop_map(|(c, p)| PortIdentity::new(ClockIdentity(c), p))
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (0..=Timestamp::MAX_SECONDS, 0u32..1_000_000_000).prop_map(|(s, n)| Timestamp {
        seconds: s,
        nanoseconds: n,
    })
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        timestamp().prop_map(|t| Body::Sync(SyncBody {
            origin_timestamp: t
        })),
        timestamp().prop_map(|t| Body::DelayReq(DelayReqBody {
            origin_timestamp: t
        })),
        timestamp().prop_map(|t| Body::FollowUp(FollowUpBody {
            precise_origin_timestamp: t
        })),
        (timestamp(), port_identity()).prop_map(|(t, p)| Body::DelayResp(DelayRespBody {
            receive_timestamp: t,
            requesting_port_identity: p
        })),
        any::<[u8; 20]>().prop_map(|b| Body::PDelayReq(OpaqueBody(b))),
        any::<[u8; 20]>().prop_map(|b| Body::PDelayResp(OpaqueBody(b))),
        any::<[u8; 20]>().prop_map(|b| Body::PDelayRespFollowUp(OpaqueBody(b))),
        (
            timestamp(),
            any::<i16>(),
            any::<[u8; 2]>(),
            any::<(u8, u8, u16)>(),
            any::<[u8; 8]>(),
            any::<u16>(),
            any::<u8>()
        )
            .prop_map(
                |(t, utc, p, q, gm, steps, src)| Body::Announce(AnnounceBody {
                    origin_timestamp: t,
                    current_utc_offset: utc,
                    grandmaster_priority1: p[0],
                    grandmaster_clock_quality: ClockQuality {
                        clock_class: q.0,
                        clock_accuracy: q.1,
                        offset_scaled_log_variance: q.2,
                    },
                    grandmaster_priority2: p[1],
                    grandmaster_identity: ClockIdentity(gm),
                    steps_removed: steps,
                    time_source: TimeSource(src),
                })
            ),
        port_identity().prop_map(|p| Body::Signaling(SignalingBody {
            target_port_identity: p
        })),
        (port_identity(), any::<u8>(), any::<u8>(), 0u8..16).prop_map(|(p, s, b, a)| {
            Body::Management(ManagementBody {
                target_port_identity: p,
                starting_boundary_hops: s,
                boundary_hops: b,
                action: a,
            })
        }),
    ]
}

fn header_for(body: Body) -> impl Strategy<Value = Header> {
    (
        0u8..16,
        0u8..16,
        any::<(u8, u8, u16, i64, u32)>(),
        port_identity(),
        any::<(u16, u8, i8)>(),
    )
        .prop_map(
            move |(sdo, minor, (dom, msdo, fl, corr, mts), spi, (seq, ctl, log))| {
                let t = body.message_type();
                let mut h = Header::new(t, spi);
                h.major_sdo_id = sdo;
                h.minor_version_ptp = minor;
                h.domain_number = dom;
                h.minor_sdo_id = msdo;
                h.flags = Flags(fl);
                h.correction = TimeInterval(corr);
                h.message_type_specific = mts;
                h.sequence_id = seq;
                h.control_field = ctl;
                h.log_message_interval = log;
                h
            },
        )
}

fn message_type() -> impl Strategy<Value = MessageType> {
    prop::sample::select(vec![
        MessageType::Sync,
        MessageType::DelayReq,
        MessageType::PDelayReq,
        MessageType::PDelayResp,
        MessageType::FollowUp,
        MessageType::DelayResp,
        MessageType::PDelayRespFollowUp,
        MessageType::Announce,
        MessageType::Signaling,
        MessageType::Management,
    ])
}

/// Owned TLV description: typed ones are encoded with `TypedTlv::write`.
#[derive(Debug, Clone)]
enum OwnedTlv {
    Request(RequestUnicastTransmission),
    Grant(GrantUnicastTransmission),
    Cancel(CancelUnicastTransmission),
    AckCancel(AcknowledgeCancelUnicastTransmission),
    Management(u16, Vec<u8>),
    Raw(u16, Vec<u8>),
}

impl OwnedTlv {
    fn typed(&self) -> TypedTlv<'_> {
        match self {
            Self::Request(r) => (*r).into(),
            Self::Grant(g) => (*g).into(),
            Self::Cancel(c) => (*c).into(),
            Self::AckCancel(a) => (*a).into(),
            Self::Management(id, d) => TypedTlv::Management(ManagementTlv {
                management_id: *id,
                data: d,
            }),
            Self::Raw(t, v) => TypedTlv::Other(Tlv {
                tlv_type: *t,
                value: v,
            }),
        }
    }
}

fn tlv() -> impl Strategy<Value = OwnedTlv> {
    prop_oneof![
        (message_type(), any::<i8>(), any::<u32>()).prop_map(|(m, l, d)| OwnedTlv::Request(
            RequestUnicastTransmission {
                message_type: m,
                log_inter_message_period: l,
                duration_s: d
            }
        )),
        (message_type(), any::<i8>(), any::<u32>(), any::<bool>()).prop_map(|(m, l, d, r)| {
            OwnedTlv::Grant(GrantUnicastTransmission {
                message_type: m,
                log_inter_message_period: l,
                duration_s: d,
                renewal_invited: r,
            })
        }),
        (message_type(), any::<bool>(), any::<bool>()).prop_map(|(m, r, g)| OwnedTlv::Cancel(
            CancelUnicastTransmission {
                message_type: m,
                maintain_request: r,
                maintain_grant: g
            }
        )),
        (message_type(), any::<bool>(), any::<bool>()).prop_map(|(m, r, g)| {
            OwnedTlv::AckCancel(AcknowledgeCancelUnicastTransmission {
                message_type: m,
                maintain_request: r,
                maintain_grant: g,
            })
        }),
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(id, d)| OwnedTlv::Management(id, d)),
        (0x0100u16.., prop::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(t, v)| OwnedTlv::Raw(t, v)),
    ]
}

fn message_parts() -> impl Strategy<Value = (Header, Body, Vec<OwnedTlv>)> {
    body().prop_flat_map(|b| (header_for(b), Just(b), prop::collection::vec(tlv(), 0..6)))
}

/// Bytes that look like a PTP message (right version, known type, consistent
/// length) with random content and a random-but-well-formed TLV chain.
fn plausible_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        message_type(),
        any::<[u8; 34]>(),
        prop::collection::vec(any::<u8>(), 30),
        prop::collection::vec(
            (any::<u16>(), prop::collection::vec(any::<u8>(), 0..10)),
            0..5,
        ),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(t, head, body, tlvs, padding)| {
            let mut b = head.to_vec();
            b[0] = (b[0] & 0xF0) | t.to_nibble();
            b[1] = (b[1] & 0xF0) | 2;
            b.extend_from_slice(&body[..t.body_len()]);
            // Keep timestamps valid (ns field of the first body timestamp).
            if t != MessageType::Signaling && t != MessageType::Management {
                b[40] &= 0x1F;
            }
            for (ty, v) in tlvs {
                b.extend_from_slice(&ty.to_be_bytes());
                b.extend_from_slice(&u16::try_from(v.len()).unwrap().to_be_bytes());
                b.extend_from_slice(&v);
            }
            let len = u16::try_from(b.len()).unwrap();
            b[2..4].copy_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&padding);
            b
        })
}

// ---------- properties ----------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// parse(write(msg)) == msg, and write(parse(bytes)) == bytes.
    #[test]
    fn write_then_parse_is_identity((header, body, tlvs) in message_parts()) {
        let mut tlv_area = vec![0u8; 1024];
        let mut n = 0;
        for t in &tlvs {
            n += t.typed().write(&mut tlv_area[n..]).unwrap();
        }
        let msg = Message { header, body, tlvs: Tlvs::new(&tlv_area[..n]).unwrap() };
        let mut buf = vec![0u8; msg.encoded_len()];
        let len = msg.write(&mut buf).unwrap();
        prop_assert_eq!(len, buf.len());

        let parsed = parse(&buf).unwrap();
        let mut want = msg;
        want.header.message_length = u16::try_from(len).unwrap();
        prop_assert_eq!(parsed, want);

        // Typed TLVs come back as written.
        let typed: Vec<_> = parsed.tlvs.typed().map(Result::unwrap).collect();
        let expected: Vec<_> = tlvs.iter().map(OwnedTlv::typed).collect();
        prop_assert_eq!(typed, expected);

        // write(parse(bytes)) reproduces the bytes.
        let mut again = vec![0u8; len];
        parsed.write(&mut again).unwrap();
        prop_assert_eq!(&again, &buf);

        // Same through MessageWriter appending the typed TLVs.
        let mut via_writer = vec![0u8; len];
        let mut w = MessageWriter::new(&mut via_writer, &Message { tlvs: Tlvs::EMPTY, ..msg }).unwrap();
        for t in &tlvs {
            w.push_tlv(&t.typed()).unwrap();
        }
        prop_assert_eq!(w.finish(), len);
        prop_assert_eq!(&via_writer, &buf);
    }

    /// Arbitrary bytes never panic; anything that parses round-trips.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..160)) {
        let _ = check(&bytes);
        let _ = probe_message_type(&bytes);
        let _ = Header::parse(&bytes);
    }

    /// Plausible messages parse and round-trip up to reserved fields.
    #[test]
    fn plausible_bytes_round_trip(bytes in plausible_bytes()) {
        prop_assert!(check(&bytes).is_ok(), "{:02x?}", bytes);
    }

    /// The TLV iterator terminates and is consistent on any input.
    #[test]
    fn tlv_iterator_terminates(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(tlvs) = Tlvs::new(&bytes) {
            let items: Vec<_> = tlvs.iter().collect();
            prop_assert_eq!(items.len(), tlvs.len());
            prop_assert!(items.len() <= MAX_TLVS);
            prop_assert_eq!(items.iter().map(Tlv::encoded_len).sum::<usize>(), bytes.len());
            for t in items {
                let _ = t.typed();
            }
        }
    }

    /// Every proper prefix of a valid message is an error.
    #[test]
    fn truncations_are_errors(bytes in plausible_bytes()) {
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        for k in 0..len {
            prop_assert!(parse(&bytes[..k]).is_err());
        }
    }

    /// Timestamp and interval conversions are exact inverses where defined.
    #[test]
    fn time_conversions(n in any::<u64>(), t in timestamp(), i in -(1i64 << 40)..(1i64 << 40)) {
        prop_assert_eq!(i128::from(n), Timestamp::from_nanos(n).to_nanos());
        prop_assert_eq!(Timestamp::try_from_nanos(t.to_nanos()), Some(t));
        let ti = TimeInterval::from_nanos(i);
        prop_assert_eq!(ti.whole_nanos(), i);
        prop_assert_eq!(TimeInterval::from_nanos_f64(ti.nanos_f64()), ti);
    }

    /// The accuracy mapping is monotonic and consistent with its bounds.
    #[test]
    fn accuracy_mapping(ns in 0.0f64..2e10) {
        let a = clock_accuracy_from_offset_ns(ns);
        prop_assert_eq!(a, clock_accuracy_from_offset_ns(-ns));
        match clock_accuracy_to_ns(a) {
            Some(bound) => {
                prop_assert!(ns <= bound);
                if a > clock_accuracy::NS_25 {
                    prop_assert!(ns > clock_accuracy_to_ns(a - 1).unwrap());
                }
            }
            None => {
                prop_assert_eq!(a, clock_accuracy::GREATER_THAN_10_S);
                prop_assert!(ns > 10e9);
            }
        }
    }
}

// ---------- deterministic mutation fuzzing ----------

/// xorshift64*: tiny deterministic PRNG so the run is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n as u64)).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_be_bytes()[0]
    }
}

fn mutate(rng: &mut Rng, p: &mut Vec<u8>) {
    const INTERESTING: [u8; 6] = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF];
    match rng.below(9) {
        // Flip one bit.
        0 if !p.is_empty() => {
            let i = rng.below(p.len());
            p[i] ^= 1 << rng.below(8);
        }
        // Random byte.
        1 if !p.is_empty() => {
            let i = rng.below(p.len());
            p[i] = rng.byte();
        }
        // Interesting byte.
        2 if !p.is_empty() => {
            let i = rng.below(p.len());
            p[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        // Truncate.
        3 => {
            let k = rng.below(p.len() + 1);
            p.truncate(k);
        }
        // Append junk.
        4 => {
            for _ in 0..rng.below(16) {
                p.push(rng.byte());
            }
        }
        // Rewrite messageLength near the real length.
        5 if p.len() >= 4 => {
            let len = u16::try_from(p.len()).unwrap();
            let delta = u16::try_from(rng.below(12)).unwrap();
            let v = if rng.below(2) == 0 {
                len.saturating_sub(delta)
            } else {
                len.saturating_add(delta)
            };
            p[2..4].copy_from_slice(&v.to_be_bytes());
        }
        // Rewrite a TLV length field (first TLV after the fixed body).
        6 if p.len() >= 4 => {
            let t = p[0] & 0x0F;
            if let Some(mt) = MessageType::from_nibble(t) {
                let at = mt.min_len() + 2;
                if p.len() >= at + 2 {
                    let v = u16::try_from(rng.below(24)).unwrap();
                    p[at..at + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
        // Change the message type nibble.
        7 if !p.is_empty() => {
            p[0] = (p[0] & 0xF0) | (rng.byte() & 0x0F);
        }
        // Duplicate a slice (grows TLV areas).
        _ if p.len() > 4 => {
            let a = rng.below(p.len());
            let b = (a + rng.below(12)).min(p.len());
            let chunk = p[a..b].to_vec();
            let at = rng.below(p.len() + 1);
            p.splice(at..at, chunk);
        }
        _ => {}
    }
}

#[test]
fn deterministic_mutations_of_golden_packets() {
    let seeds = golden();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut err) = (0u32, 0u32);
    for _ in 0..10_000 {
        let mut p = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(3) {
            mutate(&mut rng, &mut p);
        }
        match check(&p) {
            Ok(()) => ok += 1,
            Err(_) => err += 1,
        }
        // The hot-path patchers must not panic on mutated input either.
        let _ = patch::set_origin_timestamp(&mut p, Timestamp::ZERO);
        let _ = patch::set_requesting_port_identity(&mut p, PortIdentity::ALL_ONES);
        let _ = patch::set_sequence_id(&mut p, 1);
        let _ = patch::set_grandmaster_clock_quality(&mut p, ClockQuality::default());
    }
    eprintln!("mutations: {ok} parsed, {err} rejected");
    assert_eq!(ok + err, 10_000);
    // Both paths are exercised substantially.
    assert!(ok > 1_000, "ok={ok} err={err}");
    assert!(err > 1_000, "ok={ok} err={err}");
}
