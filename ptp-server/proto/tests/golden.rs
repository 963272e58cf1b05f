//! Golden vectors, builder output, error cases and truncations.

mod common;

use common::*;
use ptp_proto::*;

fn me() -> PortIdentity {
    PortIdentity::new(
        ClockIdentity::from_mac([0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc]),
        1,
    )
}

fn write_vec(m: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; m.encoded_len()];
    assert_eq!(m.write(&mut buf), Ok(buf.len()));
    buf
}

fn t1() -> Timestamp {
    Timestamp::new(1_795_627_303, 123).unwrap()
}

#[test]
fn ptp4l_request_unicast_transmission() {
    let raw = hex(PTP4L_REQUEST);
    assert_eq!(raw.len(), 54);
    let m = parse(&raw).unwrap();
    let h = m.header;
    assert_eq!(h.major_sdo_id, 0);
    assert_eq!(h.message_type, MessageType::Signaling);
    assert_eq!(h.minor_version_ptp, 0); // ptp4l 3.1.1 sends versionPTP 2.0
    assert_eq!(h.message_length, 0x36);
    assert_eq!(h.domain_number, 0);
    assert_eq!(h.minor_sdo_id, 0);
    assert_eq!(h.flags, Flags::UNICAST);
    assert_eq!(h.correction, TimeInterval::ZERO);
    assert_eq!(h.message_type_specific, 0);
    assert_eq!(h.source_port_identity.to_string(), "f633ac.fffe.ce5498-1");
    assert_eq!(
        h.source_port_identity.clock_identity,
        ClockIdentity::from_mac([0xf6, 0x33, 0xac, 0xce, 0x54, 0x98])
    );
    assert_eq!(h.sequence_id, 0);
    assert_eq!(h.control_field, control_field::OTHER);
    assert_eq!(h.log_message_interval, LOG_INTERVAL_UNSPECIFIED);
    assert!(!h.is_sptp_request());
    assert_eq!(
        m.body,
        Body::Signaling(SignalingBody {
            target_port_identity: PortIdentity::ALL_ONES
        })
    );
    assert_eq!(m.tlvs.len(), 1);
    let tlv = m.tlvs.iter().next().unwrap();
    assert_eq!(tlv.tlv_type, tlv_type::REQUEST_UNICAST_TRANSMISSION);
    assert_eq!(tlv.value, &hex("b00100000e10")[..]);
    // Zero-copy: the value points into the datagram.
    assert_eq!(tlv.value.as_ptr(), raw[48..].as_ptr());
    let req = RequestUnicastTransmission {
        message_type: MessageType::Announce,
        log_inter_message_period: 1, // 2 s, ptp4l's default logAnnounceInterval
        duration_s: 3600,
    };
    assert_eq!(tlv.typed(), Ok(TypedTlv::Request(req)));
    assert_eq!(probe_message_type(&raw), Ok(MessageType::Signaling));
    // Byte-exact round trip.
    assert_eq!(write_vec(&m), raw);
}

#[test]
fn grant_reply_to_ptp4l() {
    let raw = hex(PTP4L_REQUEST);
    let req = parse(&raw).unwrap();
    let TypedTlv::Request(r) = req.tlvs.iter().next().unwrap().typed().unwrap() else {
        panic!("not a request")
    };
    let mut buf = [0u8; 256];
    let n = write_with_tlvs(
        &mut buf,
        &Message::signaling_reply(me(), &req.header),
        &[r.grant(true).into()],
    )
    .unwrap();
    assert_eq!(&buf[..n], &hex(GRANT)[..]);
    let g = parse(&buf[..n]).unwrap();
    assert_eq!(
        g.tlvs.typed().collect::<Vec<_>>(),
        vec![Ok(TypedTlv::Grant(GrantUnicastTransmission {
            message_type: MessageType::Announce,
            log_inter_message_period: 1,
            duration_s: 3600,
            renewal_invited: true,
        }))]
    );
    // Denial: duration 0, no renewal.
    let d = r.deny();
    assert_eq!(d.duration_s, 0);
    assert_eq!(d.message_type, MessageType::Announce);
    assert!(!d.renewal_invited);
}

#[test]
fn sptp_delay_req_with_csptp_tlv_and_padding() {
    let raw = hex(SPTP_DELAY_REQ);
    assert_eq!(raw.len(), 51);
    let m = parse(&raw).unwrap();
    assert_eq!(m.header.message_type, MessageType::DelayReq);
    assert_eq!(m.header.minor_version_ptp, 1);
    assert_eq!(m.header.message_length, 49);
    assert_eq!(m.header.flags, Flags::UNICAST | Flags::PROFILE_SPECIFIC_1);
    assert!(m.header.is_sptp_request());
    assert_eq!(m.header.sequence_id, 35535);
    assert_eq!(
        m.header.source_port_identity.to_string(),
        "b8cef6.fffe.449490-1"
    );
    let tlvs: Vec<_> = m.tlvs.iter().collect();
    assert_eq!(
        tlvs,
        vec![Tlv {
            tlv_type: 0x0042,
            value: &[0xcf]
        }]
    );
    assert_eq!(tlvs[0].typed(), Ok(TypedTlv::Other(tlvs[0])));
    // Writing back drops the padding after messageLength.
    assert_eq!(write_vec(&m), raw[..49]);
    // Same header via the SPTP builder plus the raw TLV.
    // (facebook/time's SPTP client sends controlField 0; the builder uses
    // the 1588 value 1 for Delay_Req.)
    let mut b = Message::sptp_delay_req(m.header.source_port_identity, 35535);
    assert_eq!(b.header.control_field, control_field::DELAY_REQ);
    b.header.control_field = 0;
    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new(&mut buf, &b).unwrap();
    w.push_raw_tlv(0x0042, &[0xcf]).unwrap();
    let n = w.finish();
    assert_eq!(&buf[..n], &raw[..49]);
}

#[test]
fn builders_match_golden_bytes() {
    assert_eq!(
        write_vec(&Message::sync(me(), 92, Timestamp::ZERO)),
        hex(SYNC)
    );
    assert_eq!(
        write_vec(&Message::follow_up(me(), 92, t1(), 0)),
        hex(FOLLOW_UP)
    );

    let req_raw = hex(SPTP_DELAY_REQ);
    let req = parse(&req_raw).unwrap();
    let t4 = Timestamp::new(1_795_627_303, 500_000_000).unwrap();
    let resp = Message::delay_resp(me(), &req.header, t4);
    assert_eq!(write_vec(&resp), hex(DELAY_RESP));
    assert_eq!(write_vec(&resp).len(), DELAY_RESP_LEN);

    let body = AnnounceBody {
        origin_timestamp: Timestamp::ZERO,
        current_utc_offset: 37,
        grandmaster_priority1: 128,
        grandmaster_clock_quality: ClockQuality {
            clock_class: clock_class::LOCK,
            clock_accuracy: clock_accuracy::NS_100,
            offset_scaled_log_variance: 0x59E0,
        },
        grandmaster_priority2: 128,
        grandmaster_identity: me().clock_identity,
        steps_removed: 0,
        time_source: TimeSource::GNSS,
    };
    let a = write_vec(&Message::announce(me(), 1, 1, body));
    assert_eq!(a, hex(ANNOUNCE));
    assert_eq!(a.len(), ANNOUNCE_LEN);
    assert_eq!(
        Message::delay_req(me(), 1, Timestamp::ZERO).encoded_len(),
        DELAY_REQ_LEN
    );
    assert_eq!(Message::sync(me(), 1, t1()).encoded_len(), SYNC_LEN);
    assert_eq!(
        Message::follow_up(me(), 1, t1(), 0).encoded_len(),
        FOLLOW_UP_LEN
    );
    assert_eq!(
        Message::signaling(me(), 1, PortIdentity::ALL_ONES).encoded_len(),
        SIGNALING_MIN_LEN
    );
}

#[test]
fn management_and_pdelay_and_multi_tlv() {
    let raw = hex(MANAGEMENT);
    let m = parse(&raw).unwrap();
    assert_eq!(
        m.body,
        Body::Management(ManagementBody {
            target_port_identity: PortIdentity::ALL_ONES,
            starting_boundary_hops: 1,
            boundary_hops: 1,
            action: management_action::GET,
        })
    );
    let t = m.tlvs.iter().next().unwrap().typed().unwrap();
    assert_eq!(
        t,
        TypedTlv::Management(ManagementTlv {
            management_id: 0x2000,
            data: &[]
        })
    );
    assert_eq!(write_vec(&m), raw);

    let raw = hex(PDELAY_REQ);
    let m = parse(&raw).unwrap();
    assert!(matches!(m.body, Body::PDelayReq(_)));
    assert_eq!(m.encoded_len(), PDELAY_LEN);
    assert_eq!(write_vec(&m), raw);

    let raw = hex(SIGNALING_MULTI);
    let m = parse(&raw).unwrap();
    let typed: Vec<_> = m.tlvs.typed().map(Result::unwrap).collect();
    assert_eq!(
        typed,
        vec![
            TypedTlv::Request(RequestUnicastTransmission {
                message_type: MessageType::Sync,
                log_inter_message_period: -4,
                duration_s: 60,
            }),
            TypedTlv::Cancel(CancelUnicastTransmission {
                message_type: MessageType::DelayResp,
                maintain_request: true,
                maintain_grant: true,
            }),
            TypedTlv::AckCancel(AcknowledgeCancelUnicastTransmission::new(
                MessageType::Announce
            )),
            TypedTlv::Other(Tlv {
                tlv_type: tlv_type::PAD,
                value: &[0xde, 0xad, 0xbe, 0xef]
            }),
        ]
    );
    // Re-encoding the typed TLVs reproduces the TLV area.
    let mut buf = [0u8; 128];
    let n = write_with_tlvs(
        &mut buf,
        &Message {
            tlvs: Tlvs::EMPTY,
            ..m
        },
        &typed,
    )
    .unwrap();
    assert_eq!(&buf[..n], &raw[..]);
}

#[test]
fn every_typed_tlv_round_trips() {
    let all: Vec<TypedTlv<'static>> = vec![
        RequestUnicastTransmission {
            message_type: MessageType::DelayResp,
            log_inter_message_period: -7,
            duration_s: u32::MAX,
        }
        .into(),
        GrantUnicastTransmission {
            message_type: MessageType::Sync,
            log_inter_message_period: 127,
            duration_s: 0,
            renewal_invited: false,
        }
        .into(),
        CancelUnicastTransmission {
            message_type: MessageType::Announce,
            maintain_request: false,
            maintain_grant: true,
        }
        .into(),
        AcknowledgeCancelUnicastTransmission {
            message_type: MessageType::Sync,
            maintain_request: true,
            maintain_grant: false,
        }
        .into(),
        TypedTlv::Management(ManagementTlv {
            management_id: 0xC000,
            data: &[1, 2, 3, 4],
        }),
        TypedTlv::ManagementErrorStatus(ManagementErrorStatus {
            management_error_id: 0x0002,
            management_id: 0x2005,
            display_data: &[2, b'h', b'i', 0],
        }),
        TypedTlv::Other(Tlv {
            tlv_type: 0x7F00,
            value: &[],
        }),
    ];
    for t in &all {
        let mut buf = [0u8; 64];
        let n = t.write(&mut buf).unwrap();
        assert_eq!(n, t.encoded_len());
        let tlvs = Tlvs::new(&buf[..n]).unwrap();
        let back = tlvs.iter().next().unwrap();
        assert_eq!(back.tlv_type, t.tlv_type());
        assert_eq!(back.typed().as_ref(), Ok(t));
    }
    // And all of them in one message.
    let mut buf = [0u8; 256];
    let m = Message::signaling(me(), 3, PortIdentity::ALL_ONES);
    let n = write_with_tlvs(&mut buf, &m, &all).unwrap();
    let p = parse(&buf[..n]).unwrap();
    let back: Vec<_> = p.tlvs.typed().map(Result::unwrap).collect();
    assert_eq!(back, all);
}

#[test]
fn build_parse_round_trip_every_type() {
    let ts = t1();
    let other = PortIdentity::new(ClockIdentity([7; 8]), 9);
    let mut msgs = vec![
        Message::sync(me(), 1, ts),
        Message::delay_req(me(), 2, ts),
        Message::sptp_delay_req(me(), 3),
        Message::follow_up(me(), 4, ts, -3),
        Message::delay_resp(me(), &Message::delay_req(other, 5, ts).header, ts),
        Message::announce(me(), 6, 0, AnnounceBody::default()),
        Message::signaling(me(), 7, other),
        Message::signaling_reply(me(), &Message::delay_req(other, 8, ts).header),
    ];
    let mut mgmt = Message::signaling(me(), 9, other);
    mgmt.header = Header::new(MessageType::Management, me());
    mgmt.header.sequence_id = 9;
    mgmt.body = Body::Management(ManagementBody {
        target_port_identity: other,
        starting_boundary_hops: 3,
        boundary_hops: 2,
        action: management_action::RESPONSE,
    });
    msgs.push(mgmt);
    for (t, b) in [
        (MessageType::PDelayReq, Body::PDelayReq(OpaqueBody([1; 20]))),
        (
            MessageType::PDelayResp,
            Body::PDelayResp(OpaqueBody([2; 20])),
        ),
        (
            MessageType::PDelayRespFollowUp,
            Body::PDelayRespFollowUp(OpaqueBody([3; 20])),
        ),
    ] {
        let mut h = Header::new(t, me());
        h.domain_number = 44;
        h.correction = TimeInterval(-1);
        msgs.push(Message {
            header: h,
            body: b,
            tlvs: Tlvs::EMPTY,
        });
    }
    for m in msgs {
        let bytes = write_vec(&m);
        assert_eq!(bytes.len(), m.header.message_type.min_len());
        let p = parse(&bytes).unwrap();
        assert_eq!(p, m, "{}", m.header.message_type);
        assert_eq!(write_vec(&p), bytes);
        // With a TLV appended, messageLength follows.
        let mut buf = [0u8; 128];
        let mut w = MessageWriter::new(&mut buf, &m).unwrap();
        w.push_tlv(&CancelUnicastTransmission::new(MessageType::Sync).into())
            .unwrap();
        let n = w.finish();
        let p = parse(&buf[..n]).unwrap();
        assert_eq!(usize::from(p.header.message_length), n);
        assert_eq!(p.tlvs.len(), 1);
    }
}

#[test]
fn parse_errors() {
    let good = hex(SYNC);
    assert_eq!(parse(&[]), Err(ParseError::TooShort { need: 34, got: 0 }));
    assert_eq!(
        parse(&good[..33]),
        Err(ParseError::TooShort { need: 34, got: 33 })
    );

    let mut b = good.clone();
    b[1] = 0x11;
    assert_eq!(parse(&b), Err(ParseError::BadVersion(1)));
    assert_eq!(probe_message_type(&b), Err(ParseError::BadVersion(1)));

    for t in [4u8, 5, 6, 7, 0xE, 0xF] {
        let mut b = good.clone();
        b[0] = 0x10 | t;
        assert_eq!(parse(&b), Err(ParseError::UnknownMessageType(t)));
    }

    let mut b = good.clone();
    b[2..4].copy_from_slice(&60u16.to_be_bytes());
    assert_eq!(parse(&b), Err(ParseError::BadLength { field: 60, buf: 44 }));

    let mut b = good.clone();
    b[2..4].copy_from_slice(&40u16.to_be_bytes());
    assert_eq!(parse(&b), Err(ParseError::TooShort { need: 44, got: 40 }));

    let mut b = good.clone();
    b[40..44].copy_from_slice(&1_000_000_000u32.to_be_bytes());
    assert_eq!(parse(&b), Err(ParseError::BadTimestamp));

    // TLV area: 3 stray octets, or a TLV whose length runs past the end.
    let mut b = good.clone();
    b.extend_from_slice(&[0, 3, 0]);
    b[2..4].copy_from_slice(&47u16.to_be_bytes());
    assert_eq!(parse(&b), Err(ParseError::TlvOverrun { offset: 44 }));
    let mut b = hex(PTP4L_REQUEST);
    b[47] = 7; // lengthField 6 -> 7
    assert_eq!(parse(&b), Err(ParseError::TlvOverrun { offset: 44 }));
    b.push(0); // the datagram grows, messageLength does not
    assert_eq!(parse(&b), Err(ParseError::TlvOverrun { offset: 44 }));

    // 65 empty TLVs.
    let mut b = good.clone();
    b.extend_from_slice(&[0u8; 4 * 65]);
    let len = u16::try_from(b.len()).unwrap();
    b[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(parse(&b), Err(ParseError::TooManyTlvs));
    b.truncate(b.len() - 4);
    b[2..4].copy_from_slice(&(len - 4).to_be_bytes());
    assert_eq!(parse(&b).unwrap().tlvs.len(), 64);

    // Typed view of a too-short grant, and a reserved type in a request.
    let mut b = hex(GRANT);
    b[47] = 6;
    b[3] -= 2;
    let m = parse(&b).unwrap();
    assert_eq!(
        m.tlvs.iter().next().unwrap().typed(),
        Err(ParseError::TlvTooShort {
            tlv_type: 5,
            need: 8,
            got: 6
        })
    );
    let mut b = hex(PTP4L_REQUEST);
    b[48] = 0xE0;
    let m = parse(&b).unwrap();
    assert_eq!(
        m.tlvs.iter().next().unwrap().typed(),
        Err(ParseError::UnknownMessageType(0xE))
    );
}

#[test]
fn write_errors() {
    let m = Message::sync(me(), 1, Timestamp::ZERO);
    let mut small = [0u8; 43];
    assert_eq!(
        m.write(&mut small),
        Err(WriteError::BufferTooSmall { need: 44, have: 43 })
    );
    assert_eq!(small, [0u8; 43], "nothing written on error");

    let mut buf = [0u8; 128];
    let bad_ts = Timestamp {
        seconds: 1 << 48,
        nanoseconds: 0,
    };
    assert_eq!(
        Message::sync(me(), 1, bad_ts).write(&mut buf),
        Err(WriteError::InvalidField("timestamp"))
    );
    let bad_ns = Timestamp {
        seconds: 0,
        nanoseconds: 1_000_000_000,
    };
    assert_eq!(
        Message::follow_up(me(), 1, bad_ns, 0).write(&mut buf),
        Err(WriteError::InvalidField("timestamp"))
    );

    let mut mismatched = m;
    mismatched.header.message_type = MessageType::DelayReq;
    assert_eq!(
        mismatched.write(&mut buf),
        Err(WriteError::InvalidField("message_type"))
    );
    let mut sdo = m;
    sdo.header.major_sdo_id = 16;
    assert_eq!(
        sdo.write(&mut buf),
        Err(WriteError::InvalidField("major_sdo_id"))
    );
    assert_eq!(
        sdo.header.write(&mut buf),
        Err(WriteError::InvalidField("major_sdo_id"))
    );
    let mut mgmt = Message::signaling(me(), 1, me());
    mgmt.header.message_type = MessageType::Management;
    mgmt.body = Body::Management(ManagementBody {
        action: 16,
        ..ManagementBody::default()
    });
    assert_eq!(
        mgmt.write(&mut buf),
        Err(WriteError::InvalidField("action"))
    );

    // TLV that does not fit, and the 64-TLV cap.
    let s = Message::signaling(me(), 1, me());
    let mut buf = [0u8; 50];
    let mut w = MessageWriter::new(&mut buf, &s).unwrap();
    assert_eq!(
        w.push_tlv(&CancelUnicastTransmission::new(MessageType::Sync).into())
            .err(),
        None
    );
    assert_eq!(
        w.push_raw_tlv(1, &[0; 2]).err(),
        Some(WriteError::BufferTooSmall { need: 6, have: 0 })
    );
    assert_eq!(w.finish(), 50);

    let mut buf = vec![0u8; 44 + 4 * 65];
    let mut w = MessageWriter::new(&mut buf, &s).unwrap();
    for _ in 0..64 {
        w.push_raw_tlv(0x8008, &[]).unwrap();
    }
    assert_eq!(
        w.push_raw_tlv(0x8008, &[]).err(),
        Some(WriteError::InvalidField("tlv_count"))
    );
    let n = w.finish();
    assert_eq!(parse(&buf[..n]).unwrap().tlvs.len(), 64);

    // Oversized TLV value / message.
    let big = vec![0u8; 70_000];
    let mut buf = vec![0u8; 70_100];
    let mut w = MessageWriter::new(&mut buf, &s).unwrap();
    assert_eq!(
        w.push_raw_tlv(1, &big).err(),
        Some(WriteError::InvalidField("message_length"))
    );
    assert_eq!(
        Tlv {
            tlv_type: 1,
            value: &big
        }
        .write(&mut buf),
        Err(WriteError::InvalidField("tlv_length"))
    );
}

#[test]
fn every_truncation_is_an_error() {
    for pkt in golden() {
        let len = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
        assert!(check(&pkt).is_ok());
        for k in 0..len {
            assert!(parse(&pkt[..k]).is_err(), "prefix {k} of {pkt:02x?}");
        }
        // Extra trailing octets are padding.
        let mut padded = pkt.clone();
        padded.extend_from_slice(&[0xAB; 7]);
        assert!(check(&padded).is_ok());
    }
}

#[test]
fn ports_and_lengths() {
    assert_eq!(EVENT_PORT, 319);
    assert_eq!(GENERAL_PORT, 320);
    assert_eq!(MessageType::Sync.min_len(), SYNC_LEN);
    assert_eq!(MessageType::DelayReq.min_len(), DELAY_REQ_LEN);
    assert_eq!(MessageType::FollowUp.min_len(), FOLLOW_UP_LEN);
    assert_eq!(MessageType::DelayResp.min_len(), DELAY_RESP_LEN);
    assert_eq!(MessageType::Announce.min_len(), ANNOUNCE_LEN);
    assert_eq!(MessageType::Signaling.min_len(), SIGNALING_MIN_LEN);
    assert_eq!(MessageType::Management.min_len(), MANAGEMENT_MIN_LEN);
    assert_eq!(MessageType::PDelayResp.min_len(), PDELAY_LEN);
}
