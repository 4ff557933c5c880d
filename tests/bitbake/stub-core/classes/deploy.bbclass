# Stand-in for OE-core's deploy.bbclass: the variables and flags a recipe sees. The sstate copy
# of ${DEPLOYDIR} into ${DEPLOY_DIR_IMAGE} is OE-core's and not imitated here.
DEPLOYDIR = "${WORKDIR}/deploy-${PN}"
SSTATETASKS += "do_deploy"
do_deploy[sstate-inputdirs] = "${DEPLOYDIR}"
do_deploy[sstate-outputdirs] = "${DEPLOY_DIR_IMAGE}"
do_deploy[dirs] = "${B}"
do_deploy[cleandirs] = "${DEPLOYDIR}"
do_deploy[stamp-extra-info] = "${MACHINE_ARCH}"
