SUMMARY = "Stand-in for meta-virtualization's own (shell) vxn-initramfs-create"
DESCRIPTION = "meta-virtualization ships a recipe of this name at layer priority 8. meta-vxn's \
               (priority 10) must be the one built; this one fails loudly if it ever runs."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"
INHIBIT_DEFAULT_DEPS = "1"
EXCLUDE_FROM_WORLD = "1"
inherit nopackages
do_compile() {
    bbfatal "meta-virtualization's stand-in vxn-initramfs-create ran: meta-vxn's recipe should have been chosen"
}
