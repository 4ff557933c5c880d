# SPDX-License-Identifier: MIT
#
# vxn_deployed_blobs.bbclass
#
# Purpose:
# Package the DomU boot blobs that vxn-initramfs-create deployed instead of assembling rootfs.img
# a second time, so that a build makes it once whatever package carries it to the Dom0. Inherited
# by meta-vxn's vxn-dom0-blobs and by its bbappend of meta-virtualization's vxn.
#
# The recipe's do_compile calls vxn_stage_deployed_blobs, which stages the deployed set into
# ${B} (hardlinks where the file system allows); its do_install installs the staged files and
# calls vxn_seal_installed_blobs, which adds SHA256SUMS, proves it against the installed files
# and runs vxn-blobs check on them as VXN_CHECK says. Staging in do_compile rather than reading
# the deploy in do_install keeps pseudo out of it: do_install runs under pseudo, and links to
# files pseudo never saw would confuse it.
#
# The dependency is the one OE uses when a recipe consumes another's deploy (an image reading
# the kernel's do_deploy output): the task dependency puts the deployed set in place, built or
# restored from sstate, before do_compile reads it, and its task hash is in do_compile's
# signature, so a change of any input of the blobs rebuilds the package. When the package
# itself comes from sstate, the deploy is not read at all.

DEPENDS += "vxn-blobs-native"
do_compile[depends] += "vxn-initramfs-create:do_deploy"

VXN_DEPLOYED_BLOBS ??= "${DEPLOY_DIR_IMAGE}/vxn/${VXN_BLOB_ARCH}"
VXN_DEPLOYED_BLOBS[doc] = "The set vxn-initramfs-create deployed, which do_compile stages for do_install."
VXN_CHECK ?= "warn"
VXN_CHECK[doc] = "What do_install does when vxn-blobs check finds something in the installed blobs that would stop the DomU's boot: warn (each finding a warning, as bbwarn), error (fail the task) or off."

# The blobs are this MACHINE's (its kernel and vruntime images), so the package is too: two
# machines of one tune must not share a package with different blobs.
PACKAGE_ARCH = "${MACHINE_ARCH}"

# $1: the kernel's name in the deployed set (VXN_KERNEL_IMAGETYPE), staged as ${B}/kernel.
# initramfs.cpio.gz and rootfs.img keep their names; ${B}/SHA256SUMS.vxn gets the deploy's lines
# for the staged files, in the deploy's order (sha256sum's, by name).
vxn_stage_deployed_blobs[doc] = "Stages VXN_DEPLOYED_BLOBS into ${B} as kernel, initramfs.cpio.gz and rootfs.img, with their lines of its SHA256SUMS."
vxn_stage_deployed_blobs() {
    kernel_name=$1
    deployed="${VXN_DEPLOYED_BLOBS}"
    [ -f "$deployed/SHA256SUMS" ] ||
        bbfatal "$deployed/SHA256SUMS not found: vxn-initramfs-create:do_deploy should have written it (bitbake vxn-initramfs-create)"
    mkdir -p ${B}
    rm -f ${B}/kernel ${B}/initramfs.cpio.gz ${B}/rootfs.img ${B}/SHA256SUMS.vxn
    names=""
    for name in "$kernel_name" initramfs.cpio.gz rootfs.img; do
        staged=$name
        [ "$name" = "$kernel_name" ] && staged=kernel
        # No kernel in the deploy (VXN_KERNEL_REQUIRED = "0"): do_install goes without one.
        [ -f "$deployed/$name" ] || continue
        ln "$deployed/$name" ${B}/$staged 2>/dev/null || cp "$deployed/$name" ${B}/$staged
        names="$names $name"
    done
    awk -v names="$names " 'substr($0, 65, 2) == "  " && index(names, " " substr($0, 67) " ")' \
        "$deployed/SHA256SUMS" >${B}/SHA256SUMS.vxn
    [ "$(wc -l <${B}/SHA256SUMS.vxn)" -eq "$(echo $names | wc -w)" ] ||
        bbfatal "$deployed/SHA256SUMS does not list each of$names once"
}

# $1: the directory do_install put the staged files in, under ${D}. SHA256SUMS beside them,
# proved true, then the boot check of the installed set: warn turns each finding into a bbwarn,
# error fails the task, off skips it (as do_deploy's check in vxn-initramfs-create).
vxn_seal_installed_blobs[doc] = "Adds SHA256SUMS to the installed blobs, verifies it and runs vxn-blobs check as VXN_CHECK says."
vxn_seal_installed_blobs() {
    dir=$1
    install -m 0644 ${B}/SHA256SUMS.vxn $dir/SHA256SUMS
    (cd $dir && sha256sum --strict --quiet -c SHA256SUMS) ||
        bbfatal "the blobs installed in $dir differ from what vxn-initramfs-create deployed (${VXN_DEPLOYED_BLOBS})"
    case "${VXN_CHECK}" in
    off)
        return
        ;;
    warn|error)
        ;;
    *)
        bbfatal "VXN_CHECK must be warn, error or off, not '${VXN_CHECK}'"
        ;;
    esac
    found=""
    vxn-blobs check "$dir" >${T}/vxn-blobs-check.out 2>&1 || found=1
    cat ${T}/vxn-blobs-check.out
    [ -z "$found" ] && return
    [ "${VXN_CHECK}" = error ] &&
        bbfatal "vxn-blobs check found what would stop the DomU's boot in $dir (listed above; VXN_CHECK = \"error\")"
    grep -v -e '^check: ' -e '^vxn-blobs: ' ${T}/vxn-blobs-check.out | while read -r line; do
        bbwarn "check: $line"
    done
}
