#!/bin/sh
# Benchmark: `vxn-blobs inject` against the seed's shell pipeline (cp; unsquashfs -d; install x2;
# mksquashfs -noappend -comp xz), side by side in one run, on a rootfs-like tree of >= 250 MB.
#
#   scripts/bench.sh                       build the tree and images once, then run everything
#   BENCH_DIR=/var/tmp/vxn-bench scripts/bench.sh
#
# Run it as root: the tree must keep real ownership, setuid bits and device nodes, as an image
# built under pseudo does. Tunables (environment):
#   BENCH_DIR      work directory, reused across runs (default: <repo>/bench-work, gitignored)
#   BENCH_MB       size the tree is topped up to, in MB (default 300)
#   BENCH_TREE     auto | debootstrap | copy (default auto: debootstrap minbase from apt's own
#                  mirror, falling back to copying system directories)
#   BENCH_INCLUDE  extra packages for debootstrap (default: a few that make it container-like)
#   BENCH_BLOB_MB  MB of random file data added to a second gzip image, to show that our peak
#                  RSS does not grow with file data (default 300; 0 skips it)
#   BENCH_APP_MB   size of the binary the "one package changed" case rebuilds (default 10)
#   BENCH_CASES    which parts run, of: inject blob compile changed (default: all four; blob
#                  compares with inject's table, so it runs only with it)
#   VXN_BLOBS      the binary to measure (default: cargo build --release, then target/release)
# Delete BENCH_DIR/tree.info to rebuild the tree and images.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$top/bench-work}
BENCH_MB=${BENCH_MB:-300}
BENCH_TREE=${BENCH_TREE:-auto}
BENCH_INCLUDE=${BENCH_INCLUDE:-python3,perl,iproute2,ca-certificates,openssl,procps,kmod}
BENCH_BLOB_MB=${BENCH_BLOB_MB:-300}
BENCH_APP_MB=${BENCH_APP_MB:-10}
BENCH_CASES=${BENCH_CASES:-inject blob compile changed}
VXN_BLOBS=${VXN_BLOBS:-}
given_bin=$VXN_BLOBS

die() { echo "bench.sh: $*" >&2; exit 1; }
say() { echo "bench.sh: $*" >&2; }
# case_on NAME: whether BENCH_CASES asks for that part.
case_on() { case " $BENCH_CASES " in *" $1 "*) return 0 ;; esac; return 1; }

[ "$(id -u)" = 0 ] || die "run as root: the tree must keep real owners, setuid bits and device nodes"
for t in mksquashfs unsquashfs sqfsdiff install; do
    command -v "$t" >/dev/null || die "$t is missing (apt-get install squashfs-tools squashfs-tools-ng)"
done
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is missing (apt-get install time)"

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)

if [ -z "$VXN_BLOBS" ]; then
    say "cargo build --release"
    (cd "$top" && cargo build --release --locked -q)
    VXN_BLOBS=${CARGO_TARGET_DIR:-$top/target}/release/vxn-blobs
fi
[ -x "$VXN_BLOBS" ] || die "$VXN_BLOBS is not an executable"

tree=$BENCH_DIR/tree
info=$BENCH_DIR/tree.info

size_mb() { du -sm "$1" | cut -f1; }

# apt's configured Debian mirror: debootstrap can use it where no other mirror is reachable.
apt_mirror() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' "$f"
    done | head -n1
    if [ -f /etc/apt/sources.list ]; then
        awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list
    fi
}

# Copies files of the host's system directories into $1 until the tree holds $BENCH_MB MB: big
# binaries and libraries next to many small files, like a container runtime's rootfs.
top_up() {
    dest=$1
    have=$(size_mb "$tree")
    want=$((BENCH_MB - have))
    [ "$want" -gt 0 ] || return 0
    say "topping the tree up with $want MB of host system files"
    mkdir -p "$dest"
    list=$BENCH_DIR/topup.list
    find /usr/bin /usr/sbin /usr/lib /usr/libexec /usr/share /etc -xdev \
        \( -type f -o -type l -o -type d \) -printf '%s %p\n' 2>/dev/null |
        awk -v budget=$((want * 1024 * 1024)) '{ sum += $1; if (sum > budget) exit; sub(/^[0-9]+ /, ""); print }' \
        > "$list"
    tar -C / --no-recursion --xattrs --xattrs-include='*' -cf - -T "$list" 2>/dev/null |
        tar -C "$dest" --xattrs --xattrs-include='*' -xpf -
}

make_tree() {
    rm -rf "$tree" "$BENCH_DIR"/in-*.img
    method=copy
    if [ "$BENCH_TREE" != copy ] && command -v debootstrap >/dev/null; then
        mirror=$(apt_mirror)
        suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
        if [ -n "$mirror" ] && [ -n "$suite" ]; then
            say "debootstrap --variant=minbase $suite from $mirror"
            if debootstrap --variant=minbase --include="$BENCH_INCLUDE" "$suite" "$tree" "$mirror" \
                > "$BENCH_DIR/debootstrap.log" 2>&1; then
                method="debootstrap minbase $suite +$BENCH_INCLUDE"
            else
                [ "$BENCH_TREE" = debootstrap ] && die "debootstrap failed: see $BENCH_DIR/debootstrap.log"
                say "debootstrap failed (see $BENCH_DIR/debootstrap.log); copying system directories"
                rm -rf "$tree"
            fi
        fi
    fi
    [ "$BENCH_TREE" = debootstrap ] && [ "$method" = copy ] && die "debootstrap is not usable here"
    mkdir -p "$tree"
    top_up "$tree/opt/host"
    [ "$method" = copy ] || method="$method, topped up from host system dirs"
    mb=$(size_mb "$tree")
    [ "$mb" -ge 250 ] || die "the tree holds only $mb MB; raise BENCH_MB"
    printf 'method: %s\nsize: %s MB\nentries: %s\n' "$method" "$mb" "$(find "$tree" | wc -l)" > "$info"
}

[ -f "$info" ] && [ -d "$tree" ] || make_tree
say "tree: $(tr '\n' ' ' < "$info")"

for comp in gzip xz; do
    img=$BENCH_DIR/in-$comp.img
    if [ ! -f "$img" ] || [ "$info" -nt "$img" ]; then
        say "mksquashfs -comp $comp (the input image)"
        mksquashfs "$tree" "$img.tmp" -noappend -comp "$comp" -no-progress -quiet
        mv "$img.tmp" "$img"
    fi
done

# The two init scripts, about the size of the real ones.
src=$BENCH_DIR/scripts
mkdir -p "$src"
awk 'BEGIN { print "#!/bin/sh"; for (i = 0; i < 600; i++) printf "echo vxn init step %d\n", i }' > "$src/vxn-init.sh"
awk 'BEGIN { print "#!/bin/sh"; for (i = 0; i < 300; i++) printf "helper_%d() { :; }\n", i }' > "$src/vcontainer-init-common.sh"

out=$BENCH_DIR/out
rm -rf "$out"
mkdir -p "$out"

# timed LABEL CMD...: runs CMD under GNU time, keeping "wall_s maxrss_kb user_s sys_s" in
# $out/LABEL.time;
# a failure is shown and leaves no .time file, so that its row says FAILED and the rest still runs.
timed() {
    label=$1
    shift
    if ! /usr/bin/time -f '%e %M %U %S' -o "$out/$label.time.tmp" "$@" > "$out/$label.log" 2>&1; then
        say "$label FAILED (see $out/$label.log):"
        tail -n 5 "$out/$label.log" >&2
        return 0
    fi
    mv "$out/$label.time.tmp" "$out/$label.time"
}

# The seed's do_compile rootfs part, command for command (its variables as arguments; the
# compressor is xz in the seed).
cat > "$BENCH_DIR/seed-pipeline.sh" <<'EOF'
set -e
ROOTFS_SRC=$1 B=$2 S=$3 COMP=$4
mkdir -p ${B}
cp "${ROOTFS_SRC}" ${B}/rootfs.img
UNSQUASH_DIR="${B}/rootfs-unsquash"
rm -rf "${UNSQUASH_DIR}"
unsquashfs -d "${UNSQUASH_DIR}" ${B}/rootfs.img
install -m 0755 ${S}/vxn-init.sh ${UNSQUASH_DIR}/vxn-init.sh
install -m 0755 ${S}/vcontainer-init-common.sh ${UNSQUASH_DIR}/vcontainer-init-common.sh
rm -f ${B}/rootfs.img
mksquashfs "${UNSQUASH_DIR}" ${B}/rootfs.img -noappend -comp ${COMP}
rm -rf "${UNSQUASH_DIR}"
EOF

run_case() {
    name=$1 in=$2 comp=$3 mode=$4
    cat "$in" > /dev/null # same warm page cache for both sides
    say "$name: shell pipeline"
    timed "$name-shell" sh "$BENCH_DIR/seed-pipeline.sh" "$in" "$out/$name-shell" "$src" "$comp"
    cat "$in" > /dev/null
    say "$name: vxn-blobs inject --compression $mode"
    timed "$name-ours" "$VXN_BLOBS" inject "$in" --output "$out/$name-ours.img" \
        --add "$src/vxn-init.sh:/vxn-init.sh:0755" \
        --add "$src/vcontainer-init-common.sh:/vcontainer-init-common.sh" \
        --compression "$mode"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if case_on inject; then
    run_case "xz-to-xz" "$BENCH_DIR/in-xz.img" xz xz
    run_case "gzip-to-xz" "$BENCH_DIR/in-gzip.img" xz xz
    run_case "gzip-keep" "$BENCH_DIR/in-gzip.img" gzip keep
fi

# One table row: wall times, their ratio, peak RSS, output sizes and their ratio, and whether
# squashfs-tools-ng sees the same contents, owners and modes in both outputs ("-": that side
# failed; its log is in $out).
row() {
    name=$1
    ts=- ms=- to=- mo=- ss=- so=- same=- cs=- co=-
    shell_img=$out/$name-shell/rootfs.img
    ours_img=$out/$name-ours.img
    if [ -f "$out/$name-shell.time" ] && [ -f "$shell_img" ]; then
        read -r ts ms us ys < "$out/$name-shell.time"
        cs=$(awk -v u="$us" -v s="$ys" 'BEGIN { print u + s }')
        ss=$(stat -c %s "$shell_img")
    fi
    if [ -f "$out/$name-ours.time" ] && [ -f "$ours_img" ]; then
        read -r to mo uo yo < "$out/$name-ours.time"
        co=$(awk -v u="$uo" -v s="$yo" 'BEGIN { print u + s }')
        so=$(stat -c %s "$ours_img")
    fi
    if [ "$ss" != - ] && [ "$so" != - ]; then
        if sqfsdiff -a "$shell_img" -b "$ours_img" > "$out/$name.sqfsdiff" 2>&1; then
            same=yes
        else
            same="NO (see $out/$name.sqfsdiff)"
        fi
    fi
    awk -v n="$name" -v ts="$ts" -v to="$to" -v ms="$ms" -v mo="$mo" -v ss="$ss" -v so="$so" -v same="$same" -v cs="$cs" -v co="$co" '
        function num(x, fmt) { return x == "-" ? "-" : sprintf(fmt, x) }
        function ratio(a, b, fmt) { return (a == "-" || b == "-" || b == 0) ? "-" : sprintf(fmt, a / b) }
        BEGIN {
            printf "%-11s %9s %9s %11s %9s %9s %9s %9s %13s %13s %10s  %s\n", n,
                num(ts, "%.2f"), num(to, "%.2f"), ratio(ts, to, "%.1fx"), num(cs, "%.1f"), num(co, "%.1f"),
                (ms == "-" ? "-" : sprintf("%.1f", ms / 1024)), (mo == "-" ? "-" : sprintf("%.1f", mo / 1024)),
                ss, so, ratio(so, ss, "%.4f"), same
        }'
}

echo
echo "tree: $(tr '\n' ' ' < "$info")"
echo "machine: $(nproc) cores, $(uname -r); vxn-blobs: $VXN_BLOBS"
echo "load average (1/5/15 min) before the runs: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "inputs: in-gzip.img $(stat -c %s "$BENCH_DIR/in-gzip.img") bytes, in-xz.img $(stat -c %s "$BENCH_DIR/in-xz.img") bytes"
if case_on inject; then
    echo
    printf '%-11s %9s %9s %11s %9s %9s %9s %9s %13s %13s %10s  %s\n' \
        case shell_s ours_s shell/ours shell_cpu ours_cpu shell_MB ours_MB shell_bytes ours_bytes ours/shell "same contents"
    for name in xz-to-xz gzip-to-xz gzip-keep; do row "$name"; done
    echo
    echo "gzip-keep's shell side is the seed's pipeline with -comp gzip (the seed itself always writes xz)."
    echo "_s: wall seconds; _cpu: user+sys CPU seconds (the work done, whatever else runs); _MB: peak RSS."
    echo "Targets (2 cores): xz-to-xz >= 50x; gzip-to-xz >= 1.8x with ours/shell <= 1.01; ours_MB <= 128."
fi

# Peak RSS against file data: the same tree plus one file of random data (much more data, almost
# no more metadata). Our peak RSS should stay where it was in the table above.
if [ "$BENCH_BLOB_MB" -gt 0 ] && case_on blob && case_on inject; then
    blob_img=$BENCH_DIR/in-gzip-blob$BENCH_BLOB_MB.img
    if [ ! -f "$blob_img" ] || [ "$info" -nt "$blob_img" ]; then
        say "mksquashfs -comp gzip of the tree plus $BENCH_BLOB_MB MB of random data"
        mkdir -p "$BENCH_DIR/blob"
        head -c $((BENCH_BLOB_MB * 1024 * 1024)) /dev/urandom > "$BENCH_DIR/blob/blob.bin"
        mksquashfs "$tree" "$BENCH_DIR/blob" "$blob_img.tmp" -noappend -comp gzip -no-progress -quiet
        mv "$blob_img.tmp" "$blob_img"
        rm -rf "$BENCH_DIR/blob"
    fi
    echo
    for mode in keep xz; do
        say "+$BENCH_BLOB_MB MB of data: vxn-blobs inject --compression $mode"
        timed "blob-$mode" "$VXN_BLOBS" inject "$blob_img" --output "$out/blob-$mode.img" \
            --add "$src/vxn-init.sh:/vxn-init.sh:0755" \
            --add "$src/vcontainer-init-common.sh:/vcontainer-init-common.sh" \
            --compression "$mode"
        base=gzip-keep
        [ "$mode" = xz ] && base=gzip-to-xz
        if [ -f "$out/blob-$mode.time" ] && [ -f "$out/$base-ours.time" ]; then
            read -r tw mw _ < "$out/blob-$mode.time"
            read -r _ mb _ < "$out/$base-ours.time"
            awk -v m="$mode" -v n="$BENCH_BLOB_MB" -v tw="$tw" -v mw="$mw" -v mb="$mb" -v b="$base" 'BEGIN {
                printf "peak RSS with +%d MB of file data, %s: %.1f MB (%.2f s); without (%s): %.1f MB\n",
                    n, m, mw / 1024, tw, b, mb / 1024 }'
        else
            echo "peak RSS with +$BENCH_BLOB_MB MB of file data, $mode: FAILED (see $out/blob-$mode.log)"
        fi
    done
fi

# compile's inputs besides the rootfs, in DIR: an initramfs with an /init, and a file with x86's
# boot-protocol magic "HdrS" at 0x202, as compile checks for a bzImage.
compile_inputs() {
    c=$1
    mkdir -p "$c/initramfs"
    printf '#!/bin/sh\nexec /bin/sh\n' > "$c/initramfs/init"
    chmod 0755 "$c/initramfs/init"
    (cd "$c/initramfs" && echo init | cpio -o -H newc --quiet) | gzip -n > "$c/initramfs.cpio.gz"
    head -c 4096 /dev/zero > "$c/bzImage"
    printf 'HdrS' | dd of="$c/bzImage" bs=1 seek=514 conv=notrunc status=none
}

# write_spec SPEC ROOTFS BUILD_DIR [CACHE_DIR]: a compile spec for ROOTFS, using compile_inputs
# of SPEC's directory, with a block cache in CACHE_DIR when given.
write_spec() {
    c=$(dirname "$1")
    mkdir -p "$3" "$c/deploy"
    cache_key=""
    [ -z "${4:-}" ] || cache_key=",
  \"block_cache\": {\"dir\": \"$4\"}"
    cat > "$1" <<EOF
{
  "schema": 1,
  "runtime": "vdkr",
  "machine": "qemux86-64",
  "multiconfig": "vruntime-x86-64",
  "target_arch": "x86_64",
  "blob_arch": "x86_64",
  "initramfs": "$c/initramfs.cpio.gz",
  "rootfs": "$2",
  "kernel": "$c/bzImage",
  "kernel_name": "bzImage",
  "inject": [
    {"source": "$src/vxn-init.sh", "dest": "/vxn-init.sh", "mode": "0755"},
    {"source": "$src/vcontainer-init-common.sh", "dest": "/vcontainer-init-common.sh", "mode": "0755"}
  ],
  "build_dir": "$3",
  "deploy_dir": "$c/deploy"$cache_key
}
EOF
}

have_compile=yes
if ! "$VXN_BLOBS" compile --help 2>&1 | grep -q -- --spec; then
    have_compile="this vxn-blobs has no compile subcommand yet"
elif ! command -v cpio > /dev/null; then
    have_compile="cpio is missing to make its initramfs (apt-get install cpio)"
fi

# compile: an unchanged rerun against a rebuild.
if case_on compile && [ "$have_compile" != yes ]; then
    echo
    echo "compile: not measured: $have_compile."
elif case_on compile; then
    c=$BENCH_DIR/compile
    rm -rf "$c"
    mkdir -p "$c"
    compile_inputs "$c"
    write_spec "$c/spec.json" "$BENCH_DIR/in-gzip.img" "$c/build"
    if /usr/bin/time -f '%e %M' -o "$c/rebuild.time" "$VXN_BLOBS" compile --spec "$c/spec.json" > "$c/rebuild.log" 2>&1 &&
        /usr/bin/time -f '%e %M' -o "$c/rerun.time" "$VXN_BLOBS" compile --spec "$c/spec.json" > "$c/rerun.log" 2>&1; then
        read -r tb mb _ < "$c/rebuild.time"
        read -r tr mr _ < "$c/rerun.time"
        awk -v tb="$tb" -v tr="$tr" -v mb="$mb" -v mr="$mr" 'BEGIN {
            printf "\ncompile (gzip rootfs): rebuild %.2f s (%.1f MB), unchanged rerun %.2f s (%.1f MB), ratio %.1fx\n",
                tb, mb / 1024, tr, mr / 1024, (tr > 0 ? tb / tr : 0) }'
        echo "Target: the unchanged rerun takes <= 1 s or >= 50x less than the rebuild."
    else
        echo
        echo "compile: failed, not measured (see $c/rebuild.log, $c/rerun.log):"
        tail -n 3 "$c/rebuild.log" "$c/rerun.log" 2>/dev/null || true
    fi
fi

# One package changed: the tree plus a binary of BENCH_APP_MB MB (library bytes of
# the tree) with a config file, then the same tree with the binary rebuilt (every byte moved up
# by one through tr: every block differs, the compressibility stays), the config file changed
# and a file added; both imaged like in-gzip.img. Made once, kept under BENCH_DIR/changed.
changed_images() {
    chg=$BENCH_DIR/changed
    if [ -f "$chg/in-v1.img" ] && [ -f "$chg/in-v2.img" ] && [ "$chg/in-v1.img" -nt "$info" ] &&
        [ "$(cat "$chg/app.mb" 2>/dev/null)" = "$BENCH_APP_MB" ]; then
        return 0
    fi
    say "one package changed: making the two trees and their gzip images"
    rm -rf "$chg"
    mkdir -p "$chg"
    cp -a "$tree" "$chg/v1"
    app=usr/bin/vxn-bench-app
    mkdir -p "$chg/v1/usr/bin"
    # (cat is cut short by head: its broken pipe is expected.) A copied tree (BENCH_TREE=copy)
    # has no usr/lib of its own: the host's binaries under opt/host serve instead.
    if [ -d "$chg/v1/usr/lib" ]; then
        find "$chg/v1/usr/lib" -type f -size +100k -name '*.so*'
    else
        find "$chg/v1/opt/host" -type f -size +100k
    fi | sort | xargs cat 2>/dev/null |
        head -c $((BENCH_APP_MB * 1024 * 1024)) > "$chg/v1/$app"
    [ "$(stat -c %s "$chg/v1/$app")" -ge $((BENCH_APP_MB * 1024 * 1024)) ] ||
        die "the tree's libraries hold less than $BENCH_APP_MB MB for the binary; lower BENCH_APP_MB"
    chmod 0755 "$chg/v1/$app"
    mkdir -p "$chg/v1/etc/vxn-bench-app"
    awk 'BEGIN { for (i = 0; i < 40; i++) printf "option_%d = %d\n", i, i * 7 }' > "$chg/v1/etc/vxn-bench-app/app.conf"
    cp -a "$chg/v1" "$chg/v2"
    tr '\000-\377' '\001-\377\000' < "$chg/v1/$app" > "$chg/v2/$app"
    echo "option_40 = 280" >> "$chg/v2/etc/vxn-bench-app/app.conf"
    printf 'vxn-bench-app 2: rebuilt\n' > "$chg/v2/etc/vxn-bench-app/NEWS"
    for v in v1 v2; do
        mksquashfs "$chg/$v" "$chg/in-$v.img.tmp" -noappend -comp gzip -no-progress -quiet
        mv "$chg/in-$v.img.tmp" "$chg/in-$v.img"
        rm -rf "${chg:?}/$v"
    done
    echo "$BENCH_APP_MB" > "$chg/app.mb"
}

# Timed on the second image: the seed's pipeline, a cold compile, a compile into the build_dir
# that holds the first image's compile (incremental: reuse of the previous rootfs.img), and two
# compiles into fresh build_dirs with a block cache: an empty one (what the cache costs a cold
# compile) and the one the first image's compile filled (a fresh builder after the change, with
# no previous rootfs.img). The first image's compile is setup, not timed.
if case_on changed && [ "$have_compile" != yes ]; then
    echo
    echo "one package changed: not measured: $have_compile."
elif case_on changed; then
    changed_images
    c=$chg/run
    rm -rf "$c"
    mkdir -p "$c"
    compile_inputs "$c"
    write_spec "$c/v1.json" "$chg/in-v1.img" "$c/incremental" "$c/cache-warm"
    write_spec "$c/v2-incremental.json" "$chg/in-v2.img" "$c/incremental"
    write_spec "$c/v2-cold.json" "$chg/in-v2.img" "$c/cold"
    write_spec "$c/v2-cold-cache.json" "$chg/in-v2.img" "$c/cold-cache" "$c/cache-empty"
    write_spec "$c/v2-warm-cache.json" "$chg/in-v2.img" "$c/warm-cache" "$c/cache-warm"
    say "one package changed: compile of the first image, filling a block cache (setup, not timed)"
    "$VXN_BLOBS" compile --spec "$c/v1.json" > "$c/v1.log" 2>&1 || die "compile of in-v1.img failed: see $c/v1.log"
    cache_bytes=$(du -sb "$c/cache-warm" | cut -f1)
    v1_bytes=$(stat -c %s "$c/incremental/rootfs.img")
    load_changed=$(cut -d' ' -f1-3 /proc/loadavg)
    sides="shell cold incremental cold-cache warm-cache"
    for side in $sides; do
        cat "$chg/in-v2.img" > /dev/null
        say "one package changed: $side"
        case $side in
            shell) timed changed-shell sh "$BENCH_DIR/seed-pipeline.sh" "$chg/in-v2.img" "$out/changed-shell" "$src" xz ;;
            *) timed "changed-$side" "$VXN_BLOBS" compile --spec "$c/v2-$side.json" ;;
        esac
    done
    echo
    echo "one package changed: in-v1.img $(stat -c %s "$chg/in-v1.img") bytes, in-v2.img $(stat -c %s "$chg/in-v2.img") bytes ($BENCH_APP_MB MB binary rebuilt, a config file changed, a file added)"
    echo "load average (1/5/15 min) before: $load_changed; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '%-12s %9s %9s %9s %13s\n' side wall_s cpu_s peak_MB rootfs.img
    for side in $sides; do
        img=$c/$side/rootfs.img
        [ "$side" = shell ] && img=$out/changed-shell/rootfs.img
        if [ -f "$out/changed-$side.time" ] && [ -f "$img" ]; then
            read -r t m u y < "$out/changed-$side.time"
            awk -v n="$side" -v t="$t" -v m="$m" -v u="$u" -v y="$y" -v b="$(stat -c %s "$img")" 'BEGIN {
                printf "%-12s %9.2f %9.1f %9.1f %13s\n", n, t, u + y, m / 1024, b }'
            echo "$t $(awk -v u="$u" -v y="$y" 'BEGIN { print u + y }') $m" > "$c/$side.measured"
        else
            printf '%-12s %9s\n' "$side" "FAILED (see $out/changed-$side.log)"
        fi
    done
    # ratio A B FIELD LABEL: A's wall time (FIELD 1), CPU time (2) or peak RSS (3) over B's.
    ratio() {
        [ -f "$c/$1.measured" ] && [ -f "$c/$2.measured" ] || return 0
        awk -v f="$3" -v l="$4" 'NR == FNR { a = $f; next } { b = $f } END {
            printf "%s: %.2fx\n", l, (b > 0 ? a / b : 0) }' "$c/$1.measured" "$c/$2.measured"
    }
    ratio shell incremental 1 "shell / incremental, wall"
    ratio cold incremental 1 "cold / incremental, wall"
    ratio cold-cache cold 2 "cold with an empty block cache / cold, CPU"
    ratio warm-cache incremental 1 "fresh builder with the warm block cache / incremental, wall"
    ratio shell warm-cache 3 "shell / fresh builder with the warm block cache, peak RSS"
    echo "block cache after the first image's compile: $cache_bytes bytes, its rootfs.img $v1_bytes bytes ($(awk -v a="$cache_bytes" -v b="$v1_bytes" 'BEGIN { printf "%.2f", a / b }')x)"
    for side in incremental cold-cache warm-cache; do
        grep -h -o 'copied [0-9]* of [0-9]* blocks.*' "$out/changed-$side.log" | sed "s|^|$side: |" || true
    done
    for side in incremental cold-cache warm-cache; do
        [ -f "$c/cold/rootfs.img" ] && [ -f "$c/$side/rootfs.img" ] || continue
        if cmp -s "$c/cold/rootfs.img" "$c/$side/rootfs.img"; then
            echo "rootfs.img of $side: byte-identical to the cold compile's"
        else
            echo "rootfs.img of $side: DIFFERS from the cold compile's"
        fi
    done
    echo "Targets (2 cores): incremental >= 10x faster than cold and than the shell; an empty block cache"
    echo "costs cold <= 1.05x CPU; the fresh builder with the warm cache takes <= 2x the incremental wall"
    echo "time and >= 15x less peak RSS than the shell; every rootfs.img byte-identical to the cold one."
fi

echo
echo "rerun with: BENCH_DIR=$BENCH_DIR BENCH_MB=$BENCH_MB BENCH_BLOB_MB=$BENCH_BLOB_MB BENCH_APP_MB=$BENCH_APP_MB BENCH_CASES=\"$BENCH_CASES\"${given_bin:+ VXN_BLOBS=$given_bin} $top/scripts/bench.sh"
