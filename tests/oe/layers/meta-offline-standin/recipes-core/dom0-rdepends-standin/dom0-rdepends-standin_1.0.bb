SUMMARY = "Stand-in runtime providers for meta-virtualization's vxn, for the offline tier"
DESCRIPTION = "An empty package that RPROVIDES what vxn_1.0.bb and its sub-packages RDEPEND on. \
do_package_write_deb needs the do_packagedata of every runtime dependency (to rename them in \
the control file), and the real providers (xen-tools, bash, skopeo, docker...) cannot be built \
without network. The .deb keeps upstream's Depends: as written. Not for real builds."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit allarch

INHIBIT_DEFAULT_DEPS = "1"
EXCLUDE_FROM_WORLD = "1"
PACKAGES = "${PN}"
ALLOW_EMPTY:${PN} = "1"
RPROVIDES:${PN} = "xen-tools-xl xen-tools-xenstore bash jq socat coreutils util-linux e2fsprogs \
                   skopeo docker podman"

do_configure[noexec] = "1"
do_compile[noexec] = "1"
