#!/bin/sh
# Fuzzes the squashfs reader/injector and the spec parser for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: 300 seconds for each target in fuzz/
#                                             (image: squashfs inject + stat; spec: the JSON spec)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and, for the image seeds, mksquashfs. Runs on the stable
# toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z sanitizer flags. Each target runs
# for SECONDS in libFuzzer's fork mode with one worker per core, keeps going after a crash
# (every distinct one is saved under fuzz/artifacts/TARGET/), and the corpus grows in
# fuzz/corpus/TARGET across runs. The log of each run is fuzz/artifacts/TARGET/last-run.log.
#
# Reproduce a crash:  RUSTC_BOOTSTRAP=1 cargo fuzz run -a TARGET fuzz/artifacts/TARGET/crash-...
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

seconds=${1:-300}
[ $# -gt 0 ] && shift
targets=${*:-$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^vxn-blobs-fuzz')}
workers=${FUZZ_WORKERS:-$(nproc)}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz" >&2
    exit 1
fi

export RUSTC_BOOTSTRAP=1
# The fuzz workspace builds in fuzz/target, never in the product's target directory.
unset CARGO_TARGET_DIR

# Seeds: small real images of every compressor and table layout the engine reads, made fresh
# each run (nothing binary is committed).
make_image_seeds() {
    command -v mksquashfs >/dev/null || { echo "fuzz.sh: mksquashfs (squashfs-tools) is missing" >&2; exit 1; }
    seeds=fuzz/seeds/image
    rm -rf "$seeds" && mkdir -p "$seeds"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    tree=$work/tree
    mkdir -p "$tree/bin" "$tree/etc" "$tree/dev" "$tree/empty"
    head -c 9000 /dev/urandom >"$tree/bin/busybox"
    chmod 4755 "$tree/bin/busybox"
    ln -s busybox "$tree/bin/sh"
    echo vxn >"$tree/etc/hostname"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$tree/etc/passwd"
    chown 1000:1000 "$tree/etc/passwd"
    ln "$tree/etc/passwd" "$tree/etc/passwd.link"
    echo a >"$tree/a"
    truncate -s 20000 "$tree/sparse"
    mknod "$tree/dev/console" c 5 1 2>/dev/null || true
    mkfifo "$tree/dev/fifo"
    setfattr -n user.vxn -v seed "$tree/a" 2>/dev/null || true
    setfattr -n user.big -v "$(head -c 300 /dev/zero | tr '\0' x)" "$tree/etc/hostname" 2>/dev/null || true
    common="-b 4096 -noappend -quiet -mkfs-time 1 -all-time 1"
    for comp in gzip xz zstd lz4; do
        mksquashfs "$tree" "$seeds/$comp.img" $common -comp $comp >/dev/null
    done
    mksquashfs "$tree" "$seeds/uncompressed-tables.img" $common -noI -noD -noF -noX >/dev/null
    mksquashfs "$tree" "$seeds/no-export-no-xattr.img" $common -no-exports -no-xattrs -nopad >/dev/null
    mksquashfs "$tree" "$seeds/no-fragments.img" $common -no-fragments -nopad >/dev/null
    mkdir "$work/bigdir"
    i=0
    while [ $i -lt 400 ]; do
        : >"$work/bigdir/a-rather-long-file-name-to-fill-the-listing-$i"
        i=$((i + 1))
    done
    mksquashfs "$work/bigdir" "$seeds/indexed-dir.img" $common -nopad >/dev/null
    cargo run -q --release --manifest-path fuzz/Cargo.toml -p vxn-blobs-fuzz-seed -- "$seeds/sample.img"
    rm -rf "$work"
    trap - EXIT
}

# Seeds for the spec parser: a full spec as meta-vxn writes it, and a minimal one.
make_spec_seeds() {
    seeds=fuzz/seeds/spec
    rm -rf "$seeds" && mkdir -p "$seeds"
    cat >"$seeds/full.json" <<'JSON'
{
  "schema": 1,
  "runtime": "vdkr",
  "machine": "qemux86-64",
  "multiconfig": "vruntime-x86-64",
  "target_arch": "x86_64",
  "blob_arch": "x86_64",
  "initramfs": "inputs/vdkr-tiny-initramfs-image-qemux86-64.cpio.gz",
  "rootfs": "/abs/vdkr-rootfs-image-qemux86-64.rootfs.squashfs",
  "kernel": "inputs/bzImage",
  "kernel_name": "bzImage",
  "inject": [
    {"source": "inputs/vxn-init.sh", "dest": "/vxn-init.sh", "mode": "0755"},
    {"source": "inputs/vcontainer-init-common.sh", "dest": "/vcontainer-init-common.sh", "mode": "04755"}
  ],
  "build_dir": "build",
  "deploy_dir": "deploy",
  "kernel_required": true,
  "compression": "keep",
  "source_date_epoch": 1795706305,
  "jobs": 2
}
JSON
    printf '{"schema":1,"runtime":"vdkr","machine":"m","multiconfig":"mc","target_arch":"aarch64","blob_arch":"aarch64","initramfs":"i","rootfs":"r","kernel":"k","kernel_name":"Image","inject":[],"build_dir":"b","deploy_dir":"d"}\n' >"$seeds/minimal.json"
}

for target in $targets; do
    case $target in
        image) make_image_seeds ;;
        spec) make_spec_seeds ;;
    esac
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target" "fuzz/seeds/$target"
    log=fuzz/artifacts/$target/last-run.log
    echo "fuzz.sh: $target for ${seconds}s with $workers workers (log: $log)"
    # -a: debug assertions, so that arithmetic overflow on hostile input is a finding too.
    # malloc_limit_mb: any single allocation of 1 GiB or more is reported as a crash.
    cargo fuzz run -a --fuzz-dir fuzz "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -fork="$workers" -ignore_crashes=1 -max_total_time="$seconds" \
        -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1 || true
    grep -E '^#[0-9]+: cov' "$log" | tail -1 || true
    crashes=$(ls "fuzz/artifacts/$target" | grep -cE '^(crash|timeout|oom|leak)-' || true)
    echo "fuzz.sh: $target: $crashes finding(s) in fuzz/artifacts/$target"
done
