#!/usr/bin/env python3
"""gRPC client of fbclockd in Python, for the cross-language test.

Usage: client.py ADDR   (stubs fbclock_pb2*.py on PYTHONPATH)

Calls GetTime, WaitUntil(ts = latest of the GetTime answer) and Status and
prints one JSON object on stdout. Exits non-zero on any RPC error.
"""

import json
import sys
import time

import grpc

import fbclock_pb2 as pb
import fbclock_pb2_grpc as pb_grpc


def truetime(r):
    return {
        "earliest_ns": r.earliest_ns,
        "latest_ns": r.latest_ns,
        "wou_ns": r.wou_ns,
        "state": pb.SyncState.Name(r.status.state),
        "gm_holdover": r.status.gm_holdover,
        "utc": r.status.utc,
    }


def main():
    addr = sys.argv[1]
    with grpc.insecure_channel(addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = pb_grpc.FbClockStub(channel)

        got = stub.GetTime(pb.GetTimeRequest(utc=False), timeout=10)
        ts = got.latest_ns
        t0 = time.monotonic()
        waited = stub.WaitUntil(pb.WaitUntilRequest(ts_ns=ts, max_wait_ms=5000), timeout=10)
        wait_s = time.monotonic() - t0
        utc = stub.GetTime(pb.GetTimeRequest(utc=True), timeout=10)

        try:
            stub.WaitUntil(pb.WaitUntilRequest(ts_ns=ts + 3600 * 10**9, max_wait_ms=10), timeout=10)
            deadline = "OK"
        except grpc.RpcError as e:
            deadline = e.code().name

        st = stub.Status(pb.StatusRequest(), timeout=10)
        status = {
            "state": pb.SyncState.Name(st.state),
            "gm_identity": st.gm_identity if st.HasField("gm_identity") else None,
            "gm_clock_class": st.gm_clock_class if st.HasField("gm_clock_class") else None,
            "gm_clock_accuracy": st.gm_clock_accuracy if st.HasField("gm_clock_accuracy") else None,
            "server": st.server,
            "last_offset_ns": st.last_offset_ns if st.HasField("last_offset_ns") else None,
            "last_path_delay_ns": st.last_path_delay_ns if st.HasField("last_path_delay_ns") else None,
            "recent_offsets_ns": list(st.recent_offsets_ns),
            "error_bound_ns": st.error_bound_ns,
            "holdover_ns_per_s": st.holdover_ns_per_s,
            "exchanges": {
                "attempted": st.exchanges.attempted,
                "accepted": st.exchanges.accepted,
                "rejected": st.exchanges.rejected,
                "lost": st.exchanges.lost,
            },
        }

        events = []
        for ev in stub.Watch(pb.WatchRequest(interval_ms=10), timeout=10):
            events.append(ev.truetime.earliest_ns)
            if len(events) == 3:
                break

    print(json.dumps({
        "get_time": truetime(got),
        "wait_until": dict(truetime(waited), ts_ns=ts, wait_s=wait_s),
        "get_time_utc": truetime(utc),
        "far_wait_until": deadline,
        "status": status,
        "watch_earliest_ns": events,
        "grpcio": grpc.__version__,
    }))


if __name__ == "__main__":
    main()
