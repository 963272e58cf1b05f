#!/usr/bin/env bash
# Builds the timecard Debian package and proves it on this machine: installs
# it with dpkg -i, checks every systemd unit with `systemd-analyze verify`
# (any output fails), prints each unit's `systemd-analyze security` exposure,
# runs every installed binary's --version, `timecard config check` on the
# shipped configs and `timecard doctor`, then removes and purges it. The
# package never stays installed. Needs root or sudo; refuses to run where a
# timecard package is already installed.
#
#   ./scripts/package.sh                    # release profile
#   ./scripts/package.sh --profile NAME     # another cargo profile
#
# The .deb stays in target/debian/.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --profile=*) profile="${1#--profile=}"; shift ;;
        *) echo "usage: $0 [--profile NAME]" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
fail() { echo "package.sh: FAILED: $*" >&2; exit 1; }

# dpkg's state of the timecard package: installed, config-files, not-installed, …
state() { dpkg-query -W -f='${Status}' timecard 2> /dev/null | awk '{print $3}'; }
if [ -n "$(state)" ] && [ "$(state)" != not-installed ]; then
    fail "a timecard package is installed on this machine; this test would remove it"
fi

if ! cargo deb --version > /dev/null 2>&1; then
    echo "==> installing cargo-deb"
    cargo install cargo-deb --locked
fi

bins=(timecard ptp-server fbclockd timecard-counter timecard-notify timecard-push timecard-fw)
echo "==> cargo build --profile $profile (the packaged binaries)"
started=$(date +%s)
cargo build --profile "$profile" \
    -p timecard -p ptp-server -p fbclockd -p timecard-counter -p timecard-notify \
    -p timecard-push -p timecard-fw-tools $(printf -- '--bin %s ' "${bins[@]}")
echo "==> build of the packaged binaries took $(($(date +%s) - started)) s"

echo "==> cargo deb"
deb=$(cargo deb -p timecard --no-build --strip --profile "$profile" | tail -n 1)
[ -f "$deb" ] || fail "cargo deb did not report a .deb (got: $deb)"
echo "$deb ($(du -h "$deb" | cut -f1))"

user_existed=no
getent passwd timecard > /dev/null && user_existed=yes
cleanup() {
    if [ -n "$(state)" ] && [ "$(state)" != not-installed ]; then
        echo "==> cleanup: dpkg -P timecard"
        $sudo dpkg -P timecard > /dev/null || true
    fi
    if [ "$user_existed" = no ] && getent passwd timecard > /dev/null; then
        $sudo deluser --system --quiet timecard > /dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

echo "==> dpkg -i"
$sudo dpkg -i "$deb"
[ "$(state)" = installed ] || fail "not installed: $(state)"

echo "==> conffiles, user, secrets"
conffiles=$(dpkg-query -W -f='${Conffiles}\n' timecard)
for c in ptp-server.toml ptp-server.env fbclockd.toml counter.toml notify.toml push.toml; do
    grep -q " /etc/timecard/$c " <<< "$conffiles" || fail "/etc/timecard/$c is not a conffile"
done
getent passwd timecard > /dev/null || fail "postinst did not create the timecard user"
for s in api-token push.key; do
    f=/etc/timecard/$s
    [ "$($sudo stat -c '%a %U:%G' "$f")" = "640 root:root" ] || fail "$f: $($sudo stat -c '%a %U:%G' "$f")"
    $sudo grep -qxE '[0-9a-f]{64}' "$f" || fail "$f does not hold 64 hex digits"
done
echo "conffiles ok; user timecard; api-token and push.key 0640 root:root"

units=$(dpkg -L timecard | grep '\.service$' | sort)
[ "$(wc -l <<< "$units")" = 5 ] || fail "expected 5 units, got: $units"
echo "==> systemd-analyze verify (any output fails)"
for u in $units; do
    out=$(systemd-analyze verify "$u" 2>&1) || fail "verify $u: $out"
    [ -z "$out" ] || fail "verify $u printed:
$out"
    echo "$(basename "$u"): ok"
done

echo "==> systemd-analyze security --offline=true"
for u in $units; do
    line=$(systemd-analyze security --offline=true "$u" 2>&1 | grep 'Overall exposure level') ||
        fail "no exposure level for $u"
    echo "$(basename "$u"): ${line#*: }"
done

echo "==> --version"
for b in "${bins[@]}"; do
    v=$("/usr/bin/$b" --version) || fail "$b --version"
    grep -qE '^[a-z-]+ [0-9]+\.[0-9]+\.[0-9]+' <<< "$v" || fail "$b --version printed: $v"
    echo "$v"
done

echo "==> timecard config check /etc/timecard/*.toml"
/usr/bin/timecard config check /etc/timecard/*.toml

echo "==> timecard doctor (exit 1 is expected without a card)"
set +e
report=$(/usr/bin/timecard doctor 2> /tmp/timecard-doctor.err)
rc=$?
set -e
echo "$report"
[ "$rc" = 0 ] || [ "$rc" = 1 ] || fail "timecard doctor exited $rc: $(cat /tmp/timecard-doctor.err)"
for name in "time card" "driver binding" "gnss" "vfio" "ptp ports" "hardware timestamping" \
    "fbclock" "card vs system" "ptp vs system"; do
    grep -qE "^(ok  |WARN|FAIL|skip) $name " <<< "$report" || fail "doctor: no '$name' line"
done
rm -f /tmp/timecard-doctor.err

echo "==> dpkg -r, then dpkg -P"
$sudo dpkg -r timecard
[ ! -e /usr/bin/timecard ] || fail "dpkg -r left /usr/bin/timecard"
[ -e /etc/timecard/counter.toml ] || fail "dpkg -r removed a conffile"
$sudo dpkg -P timecard
[ ! -e /etc/timecard ] || fail "dpkg -P left /etc/timecard: $(ls -A /etc/timecard)"
[ -z "$(state)" ] || [ "$(state)" = not-installed ] || fail "dpkg still has timecard: $(state)"
echo "==> package.sh: ok ($deb)"
