# nooelint: oelint.var.bbclassextend,oelint.var.suggestedvar.CVE_PRODUCT
# (Suppression above: blobs for the target machine's Xen guests, packaged for its Dom0, so
# native/nativesdk variants make no sense; nothing is built from source here, the CVEs of what
# the blobs contain are checked in the kernel and image recipes that build it.)

SUMMARY = "vxn DomU boot blobs packaged for the Xen Dom0 image"
DESCRIPTION = "Kernel, tiny initramfs and rootfs.img (with the vxn init scripts) for vxn \
               (vcontainer on Xen), installed under /usr/share/vxn/<arch>/ where the vxn CLI \
               and vxn-oci-runtime look for them, for the Xen Dom0 image."
# Into a Dom0 image with IMAGE_INSTALL:append = " vxn-dom0-blobs" (docs/integration.md).
# The seed's home page; CI has no network to ping it.
# nooelint: oelint.vars.homepageping
HOMEPAGE = "https://git.yoctoproject.org/meta-virtualization/"
BUGTRACKER = "https://example.invalid/vxn-blobs/issues"
SECTION = "base"
LICENSE = "MIT"
# No upstream source with a license file: the recipe only assembles other recipes' output.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit vxn-initramfs-create

VXN_RUNTIME = "vdkr"
VXN_INSTALL_BLOBS = "1"
# vxn-initramfs-create deploys the same vxn/<arch>/ files; two recipes may not.
VXN_DEPLOY_BLOBS = "0"
