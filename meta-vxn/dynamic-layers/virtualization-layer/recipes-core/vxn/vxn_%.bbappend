# meta-virtualization's vxn, the Xen Dom0 package, with its DomU boot blobs from
# vxn-initramfs-create (vxn-blobs) instead of the unsquashfs / install / mksquashfs repack of its
# own do_compile: rootfs.img is assembled once per build, by vxn-initramfs-create, and this
# package installs what that recipe deployed, with SHA256SUMS and the boot check (VXN_CHECK),
# as meta-vxn's vxn-dom0-blobs does (both through vxn_deployed_blobs.bbclass).
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

# The repack's tool goes; vxn_deployed_blobs brings vxn-blobs-native for the boot check, the
# task dependency on vxn-initramfs-create's deploy, the staging and the sealing, and
# PACKAGE_ARCH = MACHINE_ARCH (the blobs are this machine's).
DEPENDS:remove = "squashfs-tools-native"
VXN_DEPLOYED_BLOBS ?= "${DEPLOY_DIR_IMAGE}/vxn/${BLOB_ARCH}"
inherit vxn_deployed_blobs

# vxn-dom0-blobs, meta-vxn's blob package for builds without meta-virtualization, is skipped
# beside it; an image that asks for it gets vxn, which has the same files and the CLI.
RPROVIDES:${PN} += "vxn-dom0-blobs"
RREPLACES:${PN} += "vxn-dom0-blobs"
RCONFLICTS:${PN} += "vxn-dom0-blobs"

do_compile() {
    mkdir -p ${B}
    # vxn-sendtty (SCM_RIGHTS helper for OCI terminal mode), as upstream's do_compile builds it.
    ${CC} ${CFLAGS} ${S}/vxn-sendtty.c ${LDFLAGS} -o ${B}/vxn-sendtty
    # The deployed files under the names upstream's do_install takes them from.
    vxn_stage_deployed_blobs ${KERNEL_IMAGETYPE_VXN}
}

do_install:append() {
    vxn_seal_installed_blobs ${D}${datadir}/vxn/${BLOB_ARCH}
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
