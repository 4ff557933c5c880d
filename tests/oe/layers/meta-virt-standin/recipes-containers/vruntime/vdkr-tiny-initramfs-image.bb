SUMMARY = "Stand-in for the vdkr tiny initramfs: a gzip newc cpio whose /init is a preinit"
inherit vruntime-standin-image

STANDIN_SUFFIX = ".cpio.gz"

do_image() {
    t=${STANDIN_TREE}
    mkdir -p $t/bin $t/dev $t/proc $t/sys $t/mnt/root
    cat > $t/init <<'PREINIT'
#!/bin/sh
# Stand-in preinit: mount /dev/${vcontainer.blk}a as squashfs and switch_root into vcontainer.init.
echo "stand-in preinit"
PREINIT
    chmod 0755 $t/init
    standin_clamp_times
    (cd $t && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) |
        gzip -9 -n > ${IMGDEPLOYDIR}/${STANDIN_IMAGE_NAME}${STANDIN_SUFFIX}
}
