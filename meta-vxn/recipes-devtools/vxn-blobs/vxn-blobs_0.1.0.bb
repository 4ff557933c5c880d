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

# subdir=${BP} puts the tree where every series' default S looks: ${WORKDIR}/${BP} on scarthgap
# (no UNPACKDIR), ${UNPACKDIR}/${BP} later. So neither S nor UNPACKDIR is set here: from
# styhead on, insane.bbclass refuses UNPACKDIR = WORKDIR, and a weak default set here would win
# over bitbake.conf's own.

# The C compression libraries (xz, zstd, lz4) are built from the sources their -sys crates carry
# and linked statically, not taken from xz/zstd/lz4 in DEPENDS, against OE-core's general
# preference for system libraries, for these reasons:
# - rootfs.img must be byte-identical for the same inputs, and the xz bytes depend on the
#   liblzma that encodes them. Statically linked, the encoder is part of the executable whose
#   sha256 compile records as the tool identity, and it changes only with our Cargo.lock; a
#   shared liblzma from xz-native could change under the tool after an xz upgrade, unseen.
# - The crates and their C sources are fetched from crate:// entries with checksums in
#   vxn-blobs-crates.inc, so the tool builds from its own SRC_URI alone, offline, on every
#   series, and its sstate object needs no other recipe's libraries at run time.
# - zstd and lz4 are only decoded (source images); the tool never ships in a target image unless
#   a user builds the target variant on purpose.
# Cargo.toml asks liblzma for "static"; lz4-sys always builds its bundled copy; zstd-sys does
# too unless ZSTD_SYS_USE_PKG_CONFIG is set at all, which OE-core master's cargo_common.bbclass
# exports (empty counts as set): unset it after that class has exported it.
oe_cargo_fix_env:append() {
    unset ZSTD_SYS_USE_PKG_CONFIG
}

BBCLASSEXTEND = "native"
