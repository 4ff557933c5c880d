SUMMARY = "Stand-in for the vdkr container rootfs image: a gzip squashfs with owners, devices and xattrs"
inherit vruntime-standin-image

STANDIN_SUFFIX = ".rootfs.squashfs"
# Megabytes of incompressible payload, and a second file whose bytes follow STANDIN_VARIANT
# (none when empty): tests/oe/test_faults.py makes do_compile's transcode last long enough to be
# interrupted, and changes part of the image's data from build to build, through local.conf.
STANDIN_PAYLOAD_MB ?= "6"
STANDIN_VARIANT ?= ""
STANDIN_VARIANT_MB ?= "8"

do_image() {
    t=${STANDIN_TREE}
    # usrmerged, as OE-core's usrmerge DISTRO_FEATURE lays a rootfs out: /bin and /sbin are links
    # into /usr, so a VXN_INJECT entry for /sbin/... lands in /usr/sbin (tests/oe/test_build.py).
    mkdir -p $t/usr/bin $t/usr/sbin $t/etc $t/home/user $t/dev $t/var/lib/vruntime
    ln -s usr/bin $t/bin
    ln -s usr/sbin $t/sbin
    # A real /bin/sh (the build host's, an ELF file) for the init scripts' #!, and the /sbin/init
    # the preinit looks for: vxn-blobs deploy checks that the boot would find both.
    cp "$(readlink -f "$(command -v sh)")" $t/usr/bin/sh
    ln -s ../bin/sh $t/usr/sbin/init
    echo "vruntime stand-in rootfs, release ${STANDIN_RELEASE}" > $t/etc/vruntime-release
    printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n' > $t/etc/passwd
    echo vruntime > $t/etc/hostname
    echo "a note" > $t/home/user/notes
    # A few MB that do not compress, so that recompressing takes long enough for do_compile's
    # progress to show; the same bytes every time.
    python3 -c 'import random, sys; random.seed(1); sys.stdout.buffer.write(random.randbytes(${STANDIN_PAYLOAD_MB} << 20))' \
        > $t/var/lib/vruntime/payload.bin
    if [ -n "${STANDIN_VARIANT}" ]; then
        python3 -c 'import random, sys; random.seed(sys.argv[1]); sys.stdout.buffer.write(random.randbytes(${STANDIN_VARIANT_MB} << 20))' \
            "${STANDIN_VARIANT}" > $t/var/lib/vruntime/variant.bin
    fi
    printf '#!/bin/sh\necho su\n' > $t/usr/bin/su-standin
    chmod 4755 $t/usr/bin/su-standin
    ln $t/usr/bin/su-standin $t/usr/bin/su-hardlink
    ln -s su-standin $t/usr/bin/su
    # Upstream's images carry the scripts already; injection replaces them.
    printf '#!/bin/sh\necho "old vxn-init from the image"\n' > $t/vxn-init.sh
    setfattr -n user.vruntime.origin -v standin $t/etc/hostname ||
        bbfatal "cannot set a user.* xattr in $t: the build directory's filesystem must support them"
    standin_clamp_times
    # Owners as pseudo gives a real image: root for everything (modes as on disk) but the
    # entries listed, which add other owners and device nodes.
    cat > ${WORKDIR}/special.defs <<'DEFS'
/home/user m 0750 1000 1000
/home/user/notes m 0640 1000 1000
/vxn-init.sh m 0755 1000 1000
/dev/console c 0600 0 0 5 1
/dev/null c 0666 0 0 1 3
DEFS
    find $t -mindepth 1 -printf '/%P m %m 0 0\n' |
        awk 'NR == FNR { listed[$1] = 1; print; next } !($1 in listed)' ${WORKDIR}/special.defs - \
        > ${WORKDIR}/pseudo.defs
    mksquashfs $t ${IMGDEPLOYDIR}/${STANDIN_IMAGE_NAME}${STANDIN_SUFFIX} \
        -noappend -comp gzip -root-uid 0 -root-gid 0 -pf ${WORKDIR}/pseudo.defs -no-progress -quiet
}
