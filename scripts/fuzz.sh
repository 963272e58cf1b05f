#!/usr/bin/env bash
# Fuzz the parsers that take bytes from outside: PTP messages and unicast
# negotiation (ptp-server's network input), NMEA from the GNSS UART,
# firmware images, the push edge's device tokens and frames, and the event
# log's segment files as a crash or a bad disk leaves them. libFuzzer through cargo-fuzz, on stable Rust (no
# sanitizer: `-s none`; Rust's own checks catch out-of-bounds and overflow
# with `-O` keeping debug assertions on).
#
#   ./scripts/fuzz.sh                 # every target, 60 s each
#   ./scripts/fuzz.sh 600 nmea_stream # one target for 10 minutes
#   ./scripts/fuzz.sh --list          # the targets
#
# Seeds are in fuzz/seeds/<target> (committed); what libFuzzer finds on top
# is kept in fuzz/corpus/<target> between runs (not committed). A crash
# stops the run with the input in fuzz/artifacts/<target>/ and this script
# exits non-zero; replay it with
#   cargo fuzz run -O -s none <target> fuzz/artifacts/<target>/crash-...
# (from fuzz/).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

targets=(ptp_message ptp_negotiation nmea_stream firmware_image eventlog_segment push_input)
if [ "${1:-}" = "--list" ]; then
    printf '%s\n' "${targets[@]}"
    exit 0
fi
seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz.sh: SECONDS must be a positive whole number, not '$seconds'" >&2
    exit 2
fi
shift || true
if (($#)); then
    for t in "$@"; do
        if [[ ! " ${targets[*]} " =~ " $t " ]]; then
            echo "fuzz.sh: no target '$t'; the targets: ${targets[*]}" >&2
            exit 2
        fi
    done
    targets=("$@")
fi

if ! cargo fuzz --version > /dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
# libFuzzer's C++ runtime is compiled by the libfuzzer-sys build script.
command -v c++ > /dev/null || {
    [ "$(id -u)" = 0 ] && sudo="" || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends g++
}

echo "==> cargo fuzz build"
cargo fuzz build -O -s none
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "==> fuzz $t for ${seconds} s"
    log="$(mktemp)"
    # -max_len bounds an input to a jumbo datagram / a long UART burst;
    # -timeout flags any single input taking over 10 s (a hang).
    if ! cargo fuzz run -O -s none "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
        > "$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "==> fuzz $t FAILED: input saved under fuzz/artifacts/$t/" >&2
        rm -f "$log"
        exit 1
    fi
    # One line per target: runs, coverage, corpus.
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)"
    echo "    ok: ${runs:-?} runs, ${cov:-cov: ?}, corpus $(find "corpus/$t" -type f | wc -l) inputs"
    rm -f "$log"
done
# eventlog_segment's scratch directories (one per fuzzing process).
rm -rf "${TMPDIR:-/tmp}"/timecard-fuzz-segment-*
