# meta-virtualization's vxn, the Xen Dom0 package, with its DomU boot blobs from
# vxn-initramfs-create (vxn-blobs) instead of the unsquashfs / install / mksquashfs repack of its
# own do_compile: rootfs.img is assembled once per build, by vxn-initramfs-create, and this
# package installs what that recipe deployed, with SHA256SUMS and the boot check (VXN_CHECK).
# Applied when meta-virtualization is in BBLAYERS (BBFILES_DYNAMIC, conf/layer.conf).
#
# Everything else vxn_1.0.bb makes stays as upstream builds it: its do_install (CLI, runtime,
# containerd/docker/podman configs), its packages, RDEPENDS and SRC_URI are not touched.
# What this relies on in vxn_1.0.bb (checked at parse time below; docs/integration.md):
#   - do_compile builds vxn-sendtty.c into ${B}/vxn-sendtty and otherwise only makes the blobs;
#   - do_install installs ${B}/kernel (as ${KERNEL_IMAGETYPE_VXN}), ${B}/initramfs.cpio.gz and
#     ${B}/rootfs.img into ${datadir}/vxn/${BLOB_ARCH}/;
#   - BLOB_ARCH and KERNEL_IMAGETYPE_VXN, which match vxn-initramfs-create's VXN_BLOB_ARCH and
#     VXN_KERNEL_IMAGETYPE for every TARGET_ARCH.

# The repack's tool goes, the boot check's comes.
DEPENDS:remove = "squashfs-tools-native"
DEPENDS += "vxn-blobs-native"

VXN_DEPLOYED_BLOBS ?= "${DEPLOY_DIR_IMAGE}/vxn/${BLOB_ARCH}"
VXN_DEPLOYED_BLOBS[doc] = "The set vxn-initramfs-create deployed, which vxn's do_compile stages for its do_install."
VXN_CHECK ?= "warn"

# The blobs are this MACHINE's (its kernel and vruntime images), so the package is too: two
# machines of one tune must not share a vxn package with different blobs.
PACKAGE_ARCH = "${MACHINE_ARCH}"

# vxn-dom0-blobs, meta-vxn's blob package for builds without meta-virtualization, is skipped
# beside it; an image that asks for it gets vxn, which has the same files and the CLI.
RPROVIDES:${PN} += "vxn-dom0-blobs"
RREPLACES:${PN} += "vxn-dom0-blobs"
RCONFLICTS:${PN} += "vxn-dom0-blobs"

# As an image reads the kernel's do_deploy output: the task dependency puts the deployed set in
# place (built, or restored from sstate) before this reads it, and its hash is in this task's
# signature, so a change of the blobs' inputs (an init script, an image) rebuilds the package.
do_compile[depends] += "vxn-initramfs-create:do_deploy"
do_compile() {
    mkdir -p ${B}
    # vxn-sendtty (SCM_RIGHTS helper for OCI terminal mode), as upstream's do_compile builds it.
    ${CC} ${CFLAGS} ${S}/vxn-sendtty.c ${LDFLAGS} -o ${B}/vxn-sendtty
    vxn_stage_deployed_blobs
}

# The deployed files under the names upstream's do_install takes them from (hardlinks when the
# filesystem allows), and their lines of the deploy's SHA256SUMS under the installed names.
vxn_stage_deployed_blobs[doc] = "Stages VXN_DEPLOYED_BLOBS into ${B} as upstream's do_install expects them."
vxn_stage_deployed_blobs() {
    deployed="${VXN_DEPLOYED_BLOBS}"
    [ -f "$deployed/SHA256SUMS" ] ||
        bbfatal "$deployed/SHA256SUMS not found: vxn-initramfs-create:do_deploy should have written it (bitbake vxn-initramfs-create)"
    rm -f ${B}/kernel ${B}/initramfs.cpio.gz ${B}/rootfs.img ${B}/SHA256SUMS.vxn
    for name in ${KERNEL_IMAGETYPE_VXN} initramfs.cpio.gz rootfs.img; do
        staged=$name
        [ "$name" = "${KERNEL_IMAGETYPE_VXN}" ] && staged=kernel
        # No kernel in the deploy (VXN_KERNEL_REQUIRED = "0"): upstream's do_install warns.
        [ -f "$deployed/$name" ] || continue
        ln "$deployed/$name" ${B}/$staged 2>/dev/null || cp "$deployed/$name" ${B}/$staged
        grep "  $name\$" "$deployed/SHA256SUMS" >>${B}/SHA256SUMS.vxn ||
            bbfatal "$deployed/SHA256SUMS does not list $name"
    done
}

do_install:append() {
    vxn_seal_installed_blobs
}

# SHA256SUMS beside the installed blobs, proved true, then the boot check of the installed set:
# warn turns each finding into a bbwarn, error fails the task, off skips it (as do_deploy's).
vxn_seal_installed_blobs[doc] = "Adds SHA256SUMS to the installed blobs, verifies it and runs vxn-blobs check as VXN_CHECK says."
vxn_seal_installed_blobs() {
    dir=${D}${datadir}/vxn/${BLOB_ARCH}
    install -m 0644 ${B}/SHA256SUMS.vxn $dir/SHA256SUMS
    (cd $dir && sha256sum --strict --quiet -c SHA256SUMS) ||
        bbfatal "the blobs installed in $dir differ from what vxn-initramfs-create deployed (${VXN_DEPLOYED_BLOBS})"
    case "${VXN_CHECK}" in
    off)
        return
        ;;
    warn|error)
        ;;
    *)
        bbfatal "VXN_CHECK must be warn, error or off, not '${VXN_CHECK}'"
        ;;
    esac
    found=""
    vxn-blobs check "$dir" >${T}/vxn-blobs-check.out 2>&1 || found=1
    cat ${T}/vxn-blobs-check.out
    [ -z "$found" ] && return
    [ "${VXN_CHECK}" = error ] &&
        bbfatal "vxn-blobs check found what would stop the DomU's boot in $dir (listed above; VXN_CHECK = \"error\")"
    grep -v -e '^check: ' -e '^vxn-blobs: ' ${T}/vxn-blobs-check.out | while read -r line; do
        bbwarn "check: $line"
    done
}

# Upstream's do_compile made the blobs from the multiconfig's images, hence its mcdepends; here
# they reach vxn through vxn-initramfs-create (whose do_compile has the same mcdepends), and
# vxn-sendtty need not wait for the images.
# nooelint: oelint.task.noanonpython
python __anonymous() {
    d.delVarFlag('do_compile', 'mcdepends')

    # Refuse to build rather than build something else than upstream if vxn_1.0.bb has moved
    # away from what this bbappend replaces (see the top of this file).
    reasons = []
    sources = [u.split(';')[0][len('file://'):] for u in (d.getVar('SRC_URI') or '').split()
               if u.startswith('file://')]
    compiled = sorted(s for s in sources if s.endswith('.c'))
    if compiled != ['vxn-sendtty.c']:
        reasons.append("its C sources are now %s, this do_compile builds vxn-sendtty.c alone" % (compiled or "none"))
    install = d.getVar('do_install', False) or ''
    for blob in ('kernel', 'initramfs.cpio.gz', 'rootfs.img'):
        if '${B}/' + blob not in install:
            reasons.append("its do_install no longer installs %s from do_compile's directory (B)" % blob)
    for var in ('BLOB_ARCH', 'KERNEL_IMAGETYPE_VXN'):
        if not d.getVar(var):
            reasons.append("it no longer sets %s" % var)
    if reasons:
        raise bb.parse.SkipRecipe("meta-vxn's vxn bbappend no longer matches %s: %s; update meta-vxn "
                                  "(docs/integration.md, 'The Dom0 package')" % (d.getVar('FILE'), "; ".join(reasons)))
}
