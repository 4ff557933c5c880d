SUMMARY = "Assemble Xen DomU boot blobs for meta-virtualization's vxn"
DESCRIPTION = "vxn-blobs injects the vxn init scripts into a squashfs rootfs without \
               unpacking it, checks the initramfs and kernel, and deploys the blobs atomically \
               with a README and SHA256SUMS. vxn-initramfs-create.bbclass drives vxn-blobs-native."
# The project has no public home yet: these are Cargo.toml's placeholder (and CI cannot ping).
# nooelint: oelint.vars.homepageping
HOMEPAGE = "https://example.invalid/vxn-blobs"
BUGTRACKER = "https://example.invalid/vxn-blobs/issues"
SECTION = "devel"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=e09dad2ac8bae173c3c6aabe0ecc8526"
CVE_PRODUCT = "vxn-blobs"

inherit cargo cargo-update-recipe-crates

# Every crates.io package of Cargo.lock; regenerate with scripts/gen-crates-inc.
require ${BPN}-crates.inc

# The source is the repository this layer lives in (three levels up), not a download: the
# layer ships inside the tool's repository. This is not a bbappend's FILESEXTRAPATHS.
# nooelint: oelint.vars.fileextrapaths,oelint.vars.outofcontext
FILESEXTRAPATHS:prepend := "${THISDIR}/../../..:"
# Listed one by one: a whole-directory entry for the root would copy target/ and other build
# leftovers. No externalsrc here, so that `devtool modify -n vxn-blobs-native <checkout>` works.
SRC_URI += "\
    file://Cargo.toml;subdir=${BP} \
    file://Cargo.lock;subdir=${BP} \
    file://src;subdir=${BP} \
    file://LICENSE;subdir=${BP} \
"

# scarthgap has no UNPACKDIR and unpacks into WORKDIR; later series unpack into UNPACKDIR.
# subdir=${BP} puts the tree in the same place relative to either, which is also whinlatter's
# default S, and keeps the vendored cargo_home beside the source rather than inside it.
UNPACKDIR ??= "${WORKDIR}"
S = "${UNPACKDIR}/${BP}"

BBCLASSEXTEND = "native"
