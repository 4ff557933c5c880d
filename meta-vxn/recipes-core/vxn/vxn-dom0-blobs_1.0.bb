# nooelint: oelint.var.bbclassextend,oelint.var.suggestedvar.CVE_PRODUCT
# (Suppression above: blobs for the target machine's Xen guests, packaged for its Dom0, so
# native/nativesdk variants make no sense; nothing is built from source here, the CVEs of what
# the blobs contain are checked in the kernel and image recipes that build it.)

SUMMARY = "vxn DomU boot blobs packaged for the Xen Dom0 image"
DESCRIPTION = "Kernel, tiny initramfs and rootfs.img (with the vxn init scripts) for vxn \
               (vcontainer on Xen), as vxn-initramfs-create deployed them, installed under \
               /usr/share/vxn/<arch>/ where the vxn CLI and vxn-oci-runtime look for them, for \
               the Xen Dom0 image."
# Into a Dom0 image with IMAGE_INSTALL:append = " vxn-dom0-blobs" (docs/integration.md).
# The seed's home page; CI has no network to ping it.
# nooelint: oelint.vars.homepageping
HOMEPAGE = "https://git.yoctoproject.org/meta-virtualization/"
BUGTRACKER = "https://example.invalid/vxn-blobs/issues"
SECTION = "base"
LICENSE = "MIT"
# No upstream source with a license file: the recipe only packages another recipe's output.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"
# Nothing to fetch: the blobs come from vxn-initramfs-create's deploy (do_compile).
SRC_URI = ""

# vxn_deployed_blobs: the task dependency on vxn-initramfs-create's deploy, the staging and the
# sealing, as meta-vxn's bbappend of meta-virtualization's vxn does for that package;
# vxn_blob_arch: the table of names under which vxn-initramfs-create deployed the set.
inherit features_check vxn_blob_arch vxn_deployed_blobs

# vxn-initramfs-create's knobs (docs/integration.md), with the same defaults: the deployed set's
# directory (VXN_DEPLOYED_BLOBS) and the kernel's name in it.
VXN_BLOB_ARCH ?= "${@vxn_arch_info(d)[1]}"
VXN_KERNEL_IMAGETYPE ?= "${@vxn_arch_info(d)[2]}"

# The Dom0's package: xen, as meta-virtualization's vxn; virtualization, as vxn-initramfs-create.
REQUIRED_DISTRO_FEATURES = "virtualization xen"
EXCLUDE_FROM_WORLD = "1"
INHIBIT_DEFAULT_DEPS = "1"
B = "${WORKDIR}/build"

# Where the vxn CLI (when VXN_BLOB_DIR is unset) and vxn-oci-runtime look for the blobs.
VXN_INSTALL_DIR ?= "${datadir}/vxn/${VXN_BLOB_ARCH}"
PACKAGES = "${PN}"
FILES:${PN} += "${VXN_INSTALL_DIR}"
# Prebuilt blobs for another system (the DomU): nothing to strip or split, and no file in them
# is a program of the Dom0 whose dependencies could be found.
INHIBIT_PACKAGE_STRIP = "1"
INHIBIT_PACKAGE_DEBUG_SPLIT = "1"
# (SKIP_FILEDEPS is read by OE-core's package.bbclass; oelint's variable list lacks it.)
# nooelint: oelint.vars.mispell.unknown
SKIP_FILEDEPS = "1"
# Nothing builds against the blobs, so there is never a sysroot to populate.
deltask do_populate_sysroot

do_compile() {
    vxn_stage_deployed_blobs ${VXN_KERNEL_IMAGETYPE}
}

do_install() {
    dir=${D}${VXN_INSTALL_DIR}
    install -d $dir
    # No kernel in the deploy (VXN_KERNEL_REQUIRED = "0"): the boot check says so below.
    if [ -f ${B}/kernel ]; then
        install -m 0644 ${B}/kernel $dir/${VXN_KERNEL_IMAGETYPE}
    fi
    install -m 0644 ${B}/initramfs.cpio.gz ${B}/rootfs.img $dir/
    vxn_seal_installed_blobs $dir
}
