#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the interop tests
# need (Debian packages: gpsd, linuxptp, tshark, iproute2; idempotent), then
# format check, clippy and all tests. Network tests create their own network
# namespaces (root); third-party daemons run with CAP_SYS_TIME dropped.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh -p timecard-sim   # extra args go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v gpsd >/dev/null || need_apt+=(gpsd)
command -v gpspipe >/dev/null || need_apt+=(gpsd-clients)
command -v setpriv >/dev/null || need_apt+=(util-linux)
command -v ptp4l >/dev/null || need_apt+=(linuxptp)
command -v tshark >/dev/null || need_apt+=(tshark)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v cc >/dev/null || need_apt+=(gcc)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
if ((${#need_apt[@]})); then
    echo "==> installing ${need_apt[*]}"
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer no, non-interactively.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections
    $sudo apt-get update -qq
    $sudo apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo build (the C ABI test links the fbclock cdylib)"
cargo build -p fbclock --lib
echo "==> cargo test"
cargo test --workspace "$@"
