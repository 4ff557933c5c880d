# Purpose: an image recipe in miniature, for the stand-in vruntime images. do_image packs a
# small tree into ${IMGDEPLOYDIR}; do_image_complete is an sstate task that copies it to
# ${DEPLOY_DIR_IMAGE}, as image.bbclass's does, so the files meta-vxn reads arrive the way real
# images' do (and can come from sstate). The recipe's do_image writes
# ${IMGDEPLOYDIR}/${STANDIN_IMAGE_NAME}<suffix> and the class adds the unversioned link name
# that the consumers open, as IMAGE_LINK_NAME does.

LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"
INHIBIT_DEFAULT_DEPS = "1"
EXCLUDE_FROM_WORLD = "1"
PACKAGE_ARCH = "${MACHINE_ARCH}"
inherit nopackages
deltask do_populate_sysroot

IMGDEPLOYDIR = "${WORKDIR}/deploy-${PN}-image-complete"
STANDIN_TREE = "${WORKDIR}/tree"
# Changing it changes the image: the rebuild tests of tests/oe edit it.
STANDIN_RELEASE ?= "1"
STANDIN_IMAGE_NAME = "${PN}-${MACHINE}-r${STANDIN_RELEASE}"
STANDIN_LINK_NAME = "${PN}-${MACHINE}"
# The file name ending, e.g. ".rootfs.squashfs".
STANDIN_SUFFIX ?= ""

do_image[dirs] = "${WORKDIR}"
do_image[cleandirs] = "${IMGDEPLOYDIR} ${STANDIN_TREE}"
do_image[postfuncs] += "standin_link_image"
addtask image after do_prepare_recipe_sysroot before do_image_complete

standin_link_image() {
    [ -f ${IMGDEPLOYDIR}/${STANDIN_IMAGE_NAME}${STANDIN_SUFFIX} ] ||
        bbfatal "do_image made no ${IMGDEPLOYDIR}/${STANDIN_IMAGE_NAME}${STANDIN_SUFFIX}"
    ln -sf ${STANDIN_IMAGE_NAME}${STANDIN_SUFFIX} ${IMGDEPLOYDIR}/${STANDIN_LINK_NAME}${STANDIN_SUFFIX}
}

# Sets every mtime in the tree to SOURCE_DATE_EPOCH, so the image is reproducible.
standin_clamp_times() {
    find ${STANDIN_TREE} -exec touch -h -d @${SOURCE_DATE_EPOCH} {} +
}

do_image_complete() {
    :
}
SSTATETASKS += "do_image_complete"
do_image_complete[sstate-inputdirs] = "${IMGDEPLOYDIR}"
do_image_complete[sstate-outputdirs] = "${DEPLOY_DIR_IMAGE}"
do_image_complete[stamp-extra-info] = "${MACHINE_ARCH}"
addtask do_image_complete after do_image before do_build
python do_image_complete_setscene () {
    sstate_setscene(d)
}
addtask do_image_complete_setscene
