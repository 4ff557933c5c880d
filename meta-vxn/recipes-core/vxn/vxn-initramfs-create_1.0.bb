# nooelint: oelint.var.bbclassextend,oelint.var.suggestedvar.CVE_PRODUCT
# (Suppression above: the blobs are for the target machine's Xen guests, so native/nativesdk
# variants make no sense; and nothing is built from source here, the CVEs of what the blobs
# contain are checked in the kernel and image recipes that build it.)

SUMMARY = "Xen DomU boot blobs for vxn, assembled by vxn-blobs"
DESCRIPTION = "Kernel, tiny initramfs and rootfs.img (with the vxn init scripts) for vxn \
               (vcontainer on Xen), taken from the vruntime multiconfig images and deployed \
               to DEPLOY_DIR_IMAGE/vxn/<arch>/. Replaces meta-virtualization's recipe of the \
               same name; see docs/integration.md."
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
