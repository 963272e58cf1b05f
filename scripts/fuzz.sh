#!/usr/bin/env bash
# Fuzz the parsers that take bytes from outside: PTP messages and unicast
# negotiation (ptp-server's network input), NMEA from the GNSS UART,
# firmware images, the push edge's device tokens and frames, and the event
# log's segment files as a crash or a bad disk leaves them. libFuzzer
# through cargo-fuzz, on stable Rust: optimized, with debug assertions and
# overflow checks on (`-O -a`), no sanitizer (`-s none`; Rust's own bounds
# checks stand in for AddressSanitizer in safe code).
#
#   ./scripts/fuzz.sh                   # every target, 60 s each
#   ./scripts/fuzz.sh 600 nmea_stream   # one target for 10 minutes
#   ./scripts/fuzz.sh nmea_stream       # one target, 60 s
#   ./scripts/fuzz.sh --list            # the targets
#
# Seeds are in fuzz/seeds/<target> (committed); what libFuzzer finds on top
# is kept in fuzz/corpus/<target> between runs (not committed). A crash
# stops the run with the input in fuzz/artifacts/<target>/ and this script
# exits non-zero; replay it with
#   cargo fuzz run -O -a -s none <target> fuzz/artifacts/<target>/crash-...
# (from fuzz/). Needs a C++ compiler (libFuzzer is built from source).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
# The build lives in fuzz/target, where `cargo fuzz run` looks for it.
unset CARGO_TARGET_DIR

targets=(ptp_message ptp_negotiation nmea_stream firmware_image eventlog_segment push_input)
if [ "${1:-}" = "--list" ]; then
    printf '%s\n' "${targets[@]}"
    exit 0
fi
seconds=60
if (($#)) && [[ "$1" =~ ^[0-9]+$ ]]; then
    seconds="$1"
    shift
fi
if [ "$seconds" -lt 1 ]; then
    echo "fuzz.sh: SECONDS must be at least 1" >&2
    exit 2
fi
if (($#)); then
    for t in "$@"; do
        if [[ ! " ${targets[*]} " =~ " $t " ]]; then
            echo "fuzz.sh: no target '$t' (usage: fuzz.sh [SECONDS] [TARGET...]); the targets: ${targets[*]}" >&2
            exit 2
        fi
    done
    targets=("$@")
fi

if ! command -v c++ > /dev/null; then
    echo "fuzz.sh: no C++ compiler (libFuzzer is built from source): apt-get install g++" >&2
    exit 2
fi
if ! cargo fuzz --version > /dev/null 2>&1; then
    echo "==> installing cargo-fuzz 0.13.2"
    cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi

# A private scratch directory (eventlog_segment writes its files there).
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export TMPDIR="$scratch"

echo "==> cargo fuzz build"
cargo fuzz build -O -a -s none
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "==> fuzz $t for ${seconds} s"
    log="$scratch/$t.log"
    # -max_len bounds an input to a jumbo datagram / a long UART burst;
    # -timeout flags any single input taking over 10 s (a hang).
    if ! cargo fuzz run -O -a -s none "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
        > "$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "==> fuzz $t FAILED: input saved under fuzz/artifacts/$t/" >&2
        exit 1
    fi
    # One line per target: runs, coverage, corpus.
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)"
    echo "    ok: ${runs:-?} runs, ${cov:-cov: ?}, corpus $(find "corpus/$t" -type f | wc -l) inputs"
done
