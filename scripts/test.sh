#!/bin/sh
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
#
#   scripts/test.sh            install (apt + venv) and run everything
#   VXN_NO_INSTALL=1 scripts/test.sh   skip the installs (a laptop that already has them)
#
# Under CI=true every external oracle (squashfs-tools, squashfs-tools-ng, the bb library) is
# required: a test that cannot find one fails instead of skipping.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

APT_PACKAGES="squashfs-tools squashfs-tools-ng attr cpio python3-venv time strace"

if [ "${VXN_NO_INSTALL:-}" != 1 ]; then
    missing=""
    for p in $APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "test.sh: installing apt packages:$missing"
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    fi
    if [ ! -x .venv/bin/python ] || ! cmp -s tests/requirements.txt .venv/requirements.txt; then
        echo "test.sh: preparing .venv from tests/requirements.txt"
        python3 -m venv .venv
        .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
        cp tests/requirements.txt .venv/requirements.txt
    fi
fi

echo "test.sh: cargo build --release"
cargo build --release --locked
echo "test.sh: cargo test"
cargo test --release --locked
echo "test.sh: pytest"
VXN_BLOBS="${CARGO_TARGET_DIR:-$top/target}/release/vxn-blobs" .venv/bin/python -m pytest -q tests
