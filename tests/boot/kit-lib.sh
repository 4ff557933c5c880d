# Shell functions shared by the boot tier's kit (tests/boot/make-kit) and the Xen tier's
# (tests/xen/make-kit): Debian packages fetched with `apt-get download` into a cache and unpacked
# with dpkg-deb, never installed; busybox initramfs trees; Debian's kernel and a few modules.
# Source it with `top` set to the repository and `set -eu`.

# The modules unpacked from the kernel package (not its 400 MB of all modules), for both tiers:
# virtio for plain QEMU; the Xen frontends and 9p transport of meta-virtualization's vxn.cfg;
# the Dom0's backends, its bridge and the network backend; squashfs and overlay for the preinit;
# ext4 and what it needs (crc32c: mke2fs turns metadata checksums on) for the input disk that
# meta-virtualization's vrunner.sh makes.
KIT_MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_mmio
    virtio_blk squashfs overlay xen-blkfront xen-netfront 9pnet 9pnet_xen xen-evtchn xen-gntdev
    xen-gntalloc xen-privcmd xenfs xen-blkback loop xen-netback llc stp bridge crc16 mbcache jbd2
    crc32c_generic ext4"

# kit_arch ARCH CACHE: sets debarch, cache (absolute) and apt_opts, the apt options for the
# target's architecture: the host's own, or a private state under CACHE for a foreign one (no
# dpkg --add-architecture on the host).
kit_arch() {
    case $1 in
        x86_64) debarch=amd64 ;;
        aarch64) debarch=arm64 ;;
        *) echo "kit: unknown ARCH '$1' (x86_64 or aarch64)" >&2; exit 2 ;;
    esac
    mkdir -p "$2"
    cache=$(cd "$2" && pwd)
    apt_opts=""
    if [ "$debarch" != "$(dpkg --print-architecture)" ]; then
        state=$cache/apt-$debarch
        mkdir -p "$state/lists/partial" "$state/archives/partial"
        apt_opts="-o APT::Architecture=$debarch -o APT::Architectures::=$debarch
            -o Dir::State::Lists=$state/lists -o Dir::Cache=$state -o Dir::State::status=/dev/null"
        if [ ! -e "$state/updated" ]; then
            echo "kit: fetching the $debarch package lists into $state" >&2
            # shellcheck disable=SC2086
            apt-get $apt_opts update -qq
            touch "$state/updated"
        fi
    fi
}

# kit_fetch PKG: downloads package PKG (an exact name) into the cache once; prints the .deb's
# path.
kit_fetch() {
    found=$(find "$cache" -maxdepth 1 -name "${1%%:*}_*_$debarch.deb" | head -n 1)
    if [ -z "$found" ]; then
        tmp=$(mktemp -d "$cache/.download.XXXXXX")
        # shellcheck disable=SC2086
        if ! (cd "$tmp" && apt-get $apt_opts download -q "$1" >&2); then
            rm -rf "$tmp"
            echo "kit: apt-get download $1 failed (stale package lists? run apt-get update)" >&2
            exit 1
        fi
        mv "$tmp"/*.deb "$cache/"
        rmdir "$tmp"
        found=$(find "$cache" -maxdepth 1 -name "${1%%:*}_*_$debarch.deb" | head -n 1)
    fi
    echo "$found"
}

# kit_kernel: fetches the exact kernel package linux-image-<debarch> depends on (a glob would
# fetch every version) and unpacks vmlinuz, its config and KIT_MODULES, once per .deb and
# module list, beside the .deb. Sets kpkg, kdeb, kver and unpacked.
kit_kernel() {
    # shellcheck disable=SC2086
    kpkg=$(apt-cache $apt_opts depends "linux-image-$debarch" |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
    [ -n "$kpkg" ] || { echo "kit: apt-cache names no kernel for linux-image-$debarch; run apt-get update" >&2; exit 1; }
    kdeb=$(kit_fetch "$kpkg")
    unpacked=${kdeb%.deb}.unpacked
    # shellcheck disable=SC2086
    wanted=$(echo $KIT_MODULES)
    if [ ! -d "$unpacked" ] || [ "$(cat "$unpacked/.modules" 2>/dev/null)" != "$wanted" ]; then
        tmp=$(mktemp -d "$cache/.unpack.XXXXXX")
        listing=$(dpkg-deb --fsys-tarfile "$kdeb" | tar -t)
        members=$(echo "$listing" | grep -E '^\./boot/(vmlinuz|config)-|^\./lib/modules/[^/]+/modules\.(order|builtin|builtin\.modinfo)$')
        for m in $wanted; do
            members="$members
$(echo "$listing" | grep -E "/kernel/.*/$m\.ko(\.xz)?$" || true)"
        done
        # shellcheck disable=SC2086
        dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$tmp" $members
        echo "$wanted" >"$tmp/.modules"
        rm -rf "$unpacked"
        mv "$tmp" "$unpacked"
    fi
    kver=$(ls "$unpacked/lib/modules")
}

# kit_kernel_image OUT: the kernel as the blobs hold it (arm64's vmlinuz may be Image.gz; the
# blobs and Xen take the Image itself).
kit_kernel_image() {
    vmlinuz=$unpacked/boot/vmlinuz-$kver
    if [ "$(head -c 2 "$vmlinuz" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
        gzip -dc "$vmlinuz" >"$1"
    else
        cp "$vmlinuz" "$1"
    fi
}

# kit_busybox WORK: sets busybox (a busybox-static binary for the target) and bbsource: the host's
# for its own architecture, else the package's, unpacked under WORK.
kit_busybox() {
    if [ "$debarch" = "$(dpkg --print-architecture)" ]; then
        busybox=$(command -v busybox)
        bbsource="busybox-static (host)"
    else
        bbdeb=$(kit_fetch busybox-static)
        mkdir -p "$1/busybox"
        dpkg-deb -x "$bbdeb" "$1/busybox"
        busybox=""
        for p in usr/bin/busybox bin/busybox; do
            if [ -f "$1/busybox/$p" ]; then busybox=$1/busybox/$p; fi
        done
        [ -n "$busybox" ] || { echo "kit: $bbdeb holds no bin/busybox" >&2; exit 1; }
        bbsource=$(basename "$bbdeb")
    fi
}

# kit_tree DIR: busybox with a link per applet (the list comes from the host's busybox: same
# Debian version, runs here), /dev/console and the usual mount points.
kit_tree() {
    mkdir -p "$1/bin" "$1/sbin" "$1/dev" "$1/proc" "$1/sys" "$1/mnt" "$1/etc" "$1/tmp" "$1/run"
    cp "$busybox" "$1/bin/busybox"
    for a in $(busybox --list | grep -vx busybox); do
        [ -e "$1/bin/$a" ] || ln -s busybox "$1/bin/$a"
    done
    [ -e "$1/dev/console" ] || mknod "$1/dev/console" c 5 1
}

# kit_modules DIR MODULE...: the unpacked modules with a modules.dep made by depmod, and
# /etc/boot-modules listing those of MODULE... that the kernel has (in load order) for the
# initramfs' /init to modprobe.
kit_modules() {
    dir=$1
    shift
    mkdir -p "$dir/lib/modules" "$dir/etc"
    cp -a "$unpacked/lib/modules/$kver" "$dir/lib/modules/"
    depmod -b "$dir" "$kver"
    : >"$dir/etc/boot-modules"
    for m in "$@"; do
        if find "$dir/lib/modules/$kver/kernel" -name "$m.ko*" | grep -q .; then
            echo "$m" >>"$dir/etc/boot-modules"
        fi
    done
}

# kit_pack DIR OUT: DIR as a gzip newc cpio, owned by root, in a stable order.
kit_pack() {
    (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -n -9 >"$2"
}
