#!/bin/sh
# The whole test suite, from a fresh machine: installs what the tests need, then runs each tier
# and prints its time.
#
#   scripts/test.sh                    install (apt + venv) and run every tier
#   VXN_NO_INSTALL=1 scripts/test.sh   skip the installs (a laptop that already has them)
#   VXN_TIERS="rust python" scripts/test.sh   run only the named tiers
#
# Tiers: rust (cargo build + unit and integration tests), python (pytest: spec schema, crate list,
# MSRV, the bb-library harness of meta-vxn), boot (deployed blobs boot a Debian kernel under QEMU,
# x86_64 and aarch64: tests/integration/boot.rs), xen (deployed and installed blobs boot under Xen
# with `xl create` as meta-virtualization's backend runs it: tests/integration/xen.rs), oe (the
# real bitbake with OE-core, tests/oe/; its yocto-check-layer run beside the real layers starts
# before the first tier and is reported after the oe tier as oe-check-layer).
#
# Under CI=true every external oracle (squashfs-tools, squashfs-tools-ng, the bb library, the
# OE-core and meta-virtualization snapshots, QEMU) is required: a test that cannot find one fails instead of skipping.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

APT_PACKAGES="squashfs-tools squashfs-tools-ng attr cpio python3-venv time strace"
# What the oe tier's real bitbake needs on the host (OE's HOSTTOOLS and sanity checks), and the
# Debian pseudo its stand-in pseudo-native wraps.
APT_PACKAGES="$APT_PACKAGES chrpath diffstat gawk locales file lz4 zstd xz-utils wget git pseudo"
# The boot tier's QEMU, and the tools its kit is made with (the kernel itself is downloaded, never
# installed: tests/boot/make-kit).
APT_PACKAGES="$APT_PACKAGES qemu-system-x86 qemu-system-arm busybox-static kmod"
# The xen tier's kit also reads ELF headers (readelf) to gather the Dom0's libraries.
APT_PACKAGES="$APT_PACKAGES binutils"
TIERS=${VXN_TIERS:-"rust python boot xen oe"}

start=$(date +%s)
tier_times=""
# Work run in a session of its own (setsid: the check-layer run, the xen tier as root) is not in
# the terminal's process group: when a tier fails or the run is interrupted, this script ends it.
sessions=""
trap 'for s in $sessions; do kill -TERM -- "-$s" 2>/dev/null || true; done' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Waits for the session started as PID and stops tracking it; returns its exit status.
await_session() {
    session_status=0
    wait "$1" || session_status=$?
    sessions=$(echo " $sessions " | sed "s/ $1 / /")
    return "$session_status"
}
# The machine's busy and idle CPU time so far (/proc/stat, in clock ticks): how busy the cores
# were during a tier, the background check-layer run included, says whether taking work off a
# tier can shorten the run (docs/testing.md, "Where CI's time goes").
cpu_ticks() {
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat
}
busy_percent() { # the `cpu_ticks` output at the tier's start
    set -- $1 $(cpu_ticks)
    awk -v b="$(( $3 - $1 ))" -v i="$(( $4 - $2 ))" 'BEGIN { printf "%d", (b + i) ? 100 * b / (b + i) : 0 }'
}
# Runs one tier and records how long it took and how busy the cores were meanwhile.
tier() {
    name=$1
    shift
    echo "test.sh: === tier $name ==="
    t0=$(date +%s)
    c0=$(cpu_ticks)
    "$@"
    t=$(( $(date +%s) - t0 ))
    tier_times="$tier_times $name=${t}s"
    echo "test.sh: === tier $name passed in ${t}s (cores $(busy_percent "$c0")% busy) ==="
}

install() {
    missing=""
    for p in $APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    if [ -n "$missing" ]; then
        echo "test.sh: installing apt packages:$missing"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
    # OE's sanity check wants the en_US.UTF-8 locale.
    if ! locale -a 2>/dev/null | grep -qi '^en_US\.utf-\?8$'; then
        echo "test.sh: generating the en_US.UTF-8 locale"
        grep -q '^en_US.UTF-8 UTF-8' /etc/locale.gen 2>/dev/null ||
            echo "en_US.UTF-8 UTF-8" | $SUDO tee -a /etc/locale.gen >/dev/null
        $SUDO locale-gen >/dev/null
    fi
    if [ ! -x .venv/bin/python ] || ! cmp -s tests/requirements.txt .venv/requirements.txt; then
        echo "test.sh: preparing .venv from tests/requirements.txt"
        python3 -m venv .venv
        .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
        cp tests/requirements.txt .venv/requirements.txt
    fi
}

tool="${CARGO_TARGET_DIR:-$top/target}/release/vxn-blobs"

rust_tier() {
    cargo build --release --locked
    cargo test --release --locked
}

python_tier() {
    [ -x "$tool" ] || cargo build --release --locked
    VXN_BLOBS="$tool" .venv/bin/python -m pytest -q tests/python tests/bitbake
}

# The boot tests are ignored in the rust tier; here they run one at a time, printing each boot's
# time. The kit's downloads are cached in $VXN_BOOT_CACHE (default target/boot-kit).
boot_tier() {
    cargo test --release --locked --test integration boot:: -- --ignored --test-threads=1 --nocapture
}

# Xen 4.17 under QEMU boots a Dom0 once per architecture, which runs `xl create` for each blob
# set with the config meta-virtualization's vrunner-backend-xen.sh writes. Xen and its tools are
# downloaded into the boot tier's cache (tests/xen/make-kit), never installed. meta-virtualization
# comes from $VXN_META_VIRT (a checkout) or the snapshot in $VXN_OE_SNAPSHOTS; without either it
# says how and skips (fails under CI=true).
#
# As root, with autogroup scheduling, the tier runs in a session of its own at autogroup nice
# -20, ahead of the check-layer run's BitBake servers (-5): its QEMU is timed by libxl's 40 s for
# the hotplug scripts and by the DomUs' own waits, and the check-layer run has time to spare
# (docs/testing.md, "Where CI's time goes"). Elsewhere it runs as any other tier.
xen_tier() {
    set -- cargo test --release --locked --test integration xen:: -- --ignored --test-threads=1 --nocapture
    if [ "$(id -u)" = 0 ] && [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" = 1 ]; then
        setsid sh -c 'echo -20 >/proc/$$/autogroup && exec "$@"' xen-tier "$@" &
        sessions="$sessions $!"
        await_session $!
    else
        "$@"
    fi
}

# The real bitbake with OE-core's classes (tests/oe/run): from $VXN_OE_SNAPSHOTS (.ci/run points
# it at ../shared/oe) or $VXN_OE_CORE/$VXN_BITBAKE; without either it says how and skips.
oe_tier() {
    if [ -n "${check_layer_pid:-}" ]; then
        tests/oe/run -k "not $CHECK_LAYER_TEST"
    else
        tests/oe/run
    fi
}
# yocto-check-layer on meta-vxn beside the real layers is the longest job of all (28 min alone on
# 2 idle cores: four full parses of about 4,700 recipes and four world signature dumps) and
# needs nothing the other tiers make. So when the oe tier is to run, it starts first, in the
# background, in a work directory of its own, and the other tiers run beside it; its result is
# awaited after the oe tier and printed as the tier oe-check-layer, with its time from its start.
# As root its BitBake servers run at a higher priority than the other tiers (autogroup nice -5:
# oetier.BuildDir.favour), so that it ends near its time alone and the other tiers use the CPU
# it leaves (docs/testing.md, "Where CI's time goes").
CHECK_LAYER_TEST=test_yocto_check_layer_passes_beside_the_real_layers
start_check_layer() {
    check_layer_work="${VXN_OE_WORK:-/var/tmp/vxn-oe-tier}-check-layer"
    check_layer_log="$check_layer_work.log"
    check_layer_t0=$(date +%s)
    check_layer_c0=$(cpu_ticks)
    echo "test.sh: === tier oe-check-layer started in the background (log: $check_layer_log) ==="
    VXN_OE_WORK="$check_layer_work" setsid tests/oe/run -k "$CHECK_LAYER_TEST" >"$check_layer_log" 2>&1 &
    check_layer_pid=$!
    sessions="$sessions $check_layer_pid"
}
check_layer_tier() {
    status=0
    await_session "$check_layer_pid" || status=$?
    cat "$check_layer_log"
    t=$(( $(date +%s) - check_layer_t0 ))
    tier_times="$tier_times oe-check-layer=${t}s(background)"
    if [ "$status" != 0 ]; then
        echo "test.sh: === tier oe-check-layer FAILED after ${t}s (exit $status; log above and in $check_layer_log) ==="
        exit "$status"
    fi
    echo "test.sh: === tier oe-check-layer passed in ${t}s (cores $(busy_percent "$check_layer_c0")% busy), beside the other tiers ==="
}

if [ "${VXN_NO_INSTALL:-}" != 1 ]; then
    tier install install
fi
case " $TIERS " in
    *" oe "*) start_check_layer ;;
esac
for t in $TIERS; do
    case $t in
        rust) tier rust rust_tier ;;
        python) tier python python_tier ;;
        boot) tier boot boot_tier ;;
        xen) tier xen xen_tier ;;
        oe) tier oe oe_tier; check_layer_tier ;;
        *) echo "test.sh: unknown tier '$t' (known: rust python boot xen oe)" >&2; exit 2 ;;
    esac
done
echo "test.sh: all tiers passed in $(( $(date +%s) - start ))s:$tier_times"
