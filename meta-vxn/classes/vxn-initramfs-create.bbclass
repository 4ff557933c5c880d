# nooelint: oelint.bbclass.underscores
# (Suppression above: the class is named after the recipe it serves, vxn-initramfs-create, so
# that a user finds one beside the other; BitBake accepts '-' in class names, only
# EXPORT_FUNCTIONS does not, see below.)
#
# SPDX-License-Identifier: MIT
#
# vxn-initramfs-create.bbclass
#
# Purpose:
# Build the Xen DomU boot blobs of meta-virtualization's vxn (kernel, tiny initramfs, and the
# rootfs.img squashfs with the vxn init scripts injected) from the images of the vruntime
# multiconfig, deploy them to ${DEPLOY_DIR_IMAGE}/vxn/<arch>/ and, with VXN_INSTALL_BLOBS, also
# package them under ${datadir}/vxn/<arch>/ for the Xen Dom0 image.
#
# It keeps the task graph of meta-virtualization's vxn recipes (mcdepends on the multiconfig
# images, deploy through sstate) and hands the work to vxn-blobs-native: do_compile writes a
# JSON spec (docs/spec.md) and runs `vxn-blobs compile`, do_deploy runs `vxn-blobs deploy`,
# do_install `vxn-blobs install`. The tool edits the squashfs in place of the
# unsquashfs/mksquashfs round trip and keeps ownership, xattrs and device nodes. Every input is
# in the task signatures (the images through mcdepends, else through [file-checksums]; the
# scripts through SRC_URI), so an unchanged build runs nothing and do_deploy can come from
# sstate; VXN_FORCE_BUILD = "1" restores the seed's always-rebuild.
#
# Usage: inherit vxn-initramfs-create in a recipe; every knob is listed in docs/integration.md.
#
# The class name contains '-', so EXPORT_FUNCTIONS cannot be used: the tasks are defined here
# directly and a recipe that needs to extend them uses :prepend/:append or [prefuncs].

# vxn_blob_arch: vxn_arch_info(), the per-architecture table of the knobs below.
inherit deploy features_check vxn_blob_arch

EXCLUDE_FROM_WORLD = "1"
INHIBIT_DEFAULT_DEPS = "1"
DEPENDS += "vxn-blobs-native"

VXN_RUNTIME ?= "vdkr"
VXN_RUNTIME[doc] = "Container runtime whose vruntime images are used: vdkr (Docker) or vpdmn (Podman)."

VXN_MULTICONFIG ?= "${@vxn_arch_info(d)[0]}"
VXN_MULTICONFIG[doc] = "Multiconfig that builds the kernel, initramfs and rootfs (vruntime-x86-64 or vruntime-aarch64 from TARGET_ARCH)."
VXN_BLOB_ARCH ?= "${@vxn_arch_info(d)[1]}"
VXN_BLOB_ARCH[doc] = "Directory name under ${DEPLOY_DIR_IMAGE}/vxn/ (x86_64 or aarch64), read by the vxn Xen backend."
VXN_KERNEL_IMAGETYPE ?= "${@vxn_arch_info(d)[2]}"
VXN_KERNEL_IMAGETYPE[doc] = "Kernel image file name looked up in VXN_KERNEL_DIRS and deployed under that name (bzImage, Image or zImage)."

VXN_MC_DEPLOY_DIR ?= "${TOPDIR}/tmp-${VXN_MULTICONFIG}/deploy/images/${MACHINE}"
VXN_MC_DEPLOY_DIR[doc] = "Image deploy directory of the multiconfig (its TMPDIR is tmp-<multiconfig>)."
# Where the TOPDIR lies is no input (OE-core leaves TMPDIR out of signatures for the same reason):
# with TOPDIR in do_compile's signature, a build in another TOPDIR sharing the SSTATE_DIR could
# not restore do_deploy, and compiled again.
VXN_MC_DEPLOY_DIR[vardepsexclude] = "TOPDIR"
VXN_INITRAMFS ?= "${VXN_MC_DEPLOY_DIR}/${VXN_RUNTIME}-tiny-initramfs-image-${MACHINE}.cpio.gz"
VXN_INITRAMFS[doc] = "Tiny initramfs (gzip newc cpio) copied as initramfs.cpio.gz."
VXN_ROOTFS ?= "${VXN_MC_DEPLOY_DIR}/${VXN_RUNTIME}-rootfs-image-${MACHINE}.rootfs.squashfs"
VXN_ROOTFS[doc] = "Rootfs squashfs into which the VXN_INJECT files are written, giving rootfs.img."
VXN_KERNEL_DIRS ?= "${VXN_MC_DEPLOY_DIR} ${DEPLOY_DIR_IMAGE}"
VXN_KERNEL_DIRS[doc] = "Directories searched in order for VXN_KERNEL_IMAGETYPE: the multiconfig's deploy dir, then this configuration's."
VXN_KERNEL_REQUIRED ?= "0"
VXN_KERNEL_REQUIRED[doc] = "1: a missing kernel fails do_compile. 0 (the seed's behaviour): it is a warning and no kernel is deployed."

VXN_SCRIPTS_SUBDIR ?= "recipes-containers/vcontainer/files"
VXN_SCRIPTS_SUBDIR[doc] = "Where, inside a layer, the vcontainer init scripts live; used to find meta-virtualization in BBLAYERS."

# The scripts live in meta-virtualization, not in this layer: take them from the first layer in
# BBLAYERS that has VXN_SCRIPTS_SUBDIR, so that the layers can sit anywhere.
def vxn_find_scripts_dir(d):
    subdir = d.getVar('VXN_SCRIPTS_SUBDIR')
    for layer in (d.getVar('BBLAYERS') or '').split():
        candidate = os.path.join(layer, subdir)
        if os.path.isdir(candidate):
            return candidate
    return ''

VXN_SCRIPTS_DIR ?= "${@vxn_find_scripts_dir(d)}"
VXN_SCRIPTS_DIR[doc] = "Directory holding the files named in VXN_INJECT; default: meta-virtualization's vcontainer files found through BBLAYERS."

VXN_INJECT ?= "vxn-init.sh:/vxn-init.sh:0755 vcontainer-init-common.sh:/vcontainer-init-common.sh:0755"
VXN_INJECT[doc] = "Space-separated SRCNAME:DEST:MODE entries: file SRCNAME (fetched as file://SRCNAME) is written to absolute path DEST in rootfs.img with octal MODE."

VXN_COMPRESSION ?= "xz"
VXN_COMPRESSION[doc] = "rootfs.img compression: xz (the seed's mksquashfs -comp xz) or keep (the source image's compressor, no recompression)."
VXN_CHECK ?= "warn"
VXN_CHECK[doc] = "What do_deploy and do_install do when vxn-blobs check finds something that would stop the DomU's boot (init not executable, interpreter missing...): warn (each finding a warning, as bbwarn), error (fail the task, install nothing) or off."
VXN_JOBS ?= ""
VXN_JOBS[doc] = "Threads vxn-blobs may use; empty: all cores."
# In SSTATE_DIR because that is what builders already share (NFS, one directory for several
# TOPDIRs) and what outlives TMPDIR and rm_work; sstate-cache-management.py only ever touches
# its own sstate:* files.
VXN_BLOCK_CACHE ?= "${SSTATE_DIR}/vxn-blocks"
VXN_BLOCK_CACHE[doc] = "Block cache of do_compile (docs/spec.md): compressed rootfs.img blocks kept by what they encode, so that a build without the previous rootfs.img (rm_work, a new TMPDIR, another builder sharing this directory) compresses only the blocks no build has compressed before. Empty: no cache. In no task signature: it changes no output byte."
VXN_BLOCK_CACHE_SIZE ?= "5G"
VXN_BLOCK_CACHE_SIZE[doc] = "What the block cache's entries may take (bytes, or with K, M, G, T) before the least recently used are removed."
VXN_BLOCK_CACHE_READ_ONLY ?= "0"
VXN_BLOCK_CACHE_READ_ONLY[doc] = "1: take blocks from VXN_BLOCK_CACHE but write, touch and remove nothing there (a read-only mirror, or a cache another user owns)."
VXN_FORCE_BUILD ?= "0"
VXN_FORCE_BUILD[doc] = "1: do_compile and do_deploy always run ([nostamp]) and do_deploy makes no sstate object, as in the seed. 0: they run when an input changed (every input is in their signatures) and do_deploy comes from sstate when it can."
VXN_INSTALL_BLOBS ?= "0"
VXN_INSTALL_BLOBS[doc] = "1: do_install puts the kernel, initramfs.cpio.gz, rootfs.img and SHA256SUMS under VXN_INSTALL_DIR and they are packaged as ${PN}, for the Xen Dom0 image. 0: deploy only, no packages (the seed's recipe)."
VXN_INSTALL_DIR ?= "${datadir}/vxn/${VXN_BLOB_ARCH}"
VXN_INSTALL_DIR[doc] = "Where VXN_INSTALL_BLOBS installs the blobs on the target; the vxn CLI and vxn-oci-runtime look in /usr/share/vxn/<arch>."
VXN_DEPLOY_BLOBS ?= "1"
VXN_DEPLOY_BLOBS[doc] = "0: no do_deploy (for a recipe that only packages the blobs beside one that deploys them: two recipes may not deploy the same vxn/<arch> files)."
VXN_REQUIRED_DISTRO_FEATURES ?= "virtualization ${@'xen' if bb.utils.to_boolean(d.getVar('VXN_INSTALL_BLOBS')) else ''}"
VXN_REQUIRED_DISTRO_FEATURES[doc] = "DISTRO_FEATURES without which the recipe is skipped (features_check names the missing one): virtualization, and xen for the Dom0 package, as meta-virtualization's vxn recipes."
REQUIRED_DISTRO_FEATURES = "${VXN_REQUIRED_DISTRO_FEATURES}"
# In ${T}, which pseudo never tracks: the spec is rewritten by do_compile (outside pseudo) and
# by do_install (under it), and pseudo aborts on a file changed behind its back.
VXN_SPEC ?= "${T}/vxn-blobs-spec.json"
VXN_SPEC[doc] = "Where the tasks write the JSON spec handed to vxn-blobs."

# Parse VXN_INJECT into (source name, destination, mode) tuples; ValueError names a bad entry.
def vxn_inject_entries(d):
    import re
    entries = []
    for entry in (d.getVar('VXN_INJECT') or '').split():
        parts = entry.split(':')
        if len(parts) != 3:
            raise ValueError("VXN_INJECT entry '%s' is not SRCNAME:DEST:MODE" % entry)
        src, dest, mode = parts
        if not src or src.startswith('/') or '..' in src.split('/'):
            raise ValueError("VXN_INJECT entry '%s': SRCNAME must be a relative file name found through FILESPATH" % entry)
        if not dest.startswith('/') or dest == '/':
            raise ValueError("VXN_INJECT entry '%s': DEST must be an absolute path of a file in the rootfs" % entry)
        if not re.match(r'^0?[0-7]{3,4}$', mode):
            raise ValueError("VXN_INJECT entry '%s': MODE must be octal like 0755" % entry)
        entries.append((src, dest, mode))
    return entries

def vxn_src_uri(d):
    try:
        return ' '.join('file://%s;subdir=${BP}' % src for src, _, _ in vxn_inject_entries(d))
    except ValueError:
        # Reported with a clear message by the anonymous function below.
        return ''

# A class, not a bbappend, points at another layer's files here; and '=' rather than ':=' on
# purpose, so that VXN_SCRIPTS_DIR set after the inherit (recipe, bbappend) still counts. An
# empty VXN_SCRIPTS_DIR skips the recipe below, so the entry is never a bare ':'.
# nooelint: oelint.vars.fileextrapaths,oelint.vars.fileextrapathsop,oelint.vars.outofcontext
FILESEXTRAPATHS:prepend = "${VXN_SCRIPTS_DIR}:"
SRC_URI = "${@vxn_src_uri(d)}"

# The files unpack into ${BP} below the unpack root (WORKDIR on scarthgap, UNPACKDIR later),
# which is where every series' default S points; so S and UNPACKDIR keep OE-core's values
# (insane.bbclass refuses S or UNPACKDIR = WORKDIR from styhead on).
B = "${WORKDIR}/build"

# SOURCE_DATE_EPOCH is the blobs' time (the README's Date, rootfs.img's mkfs time and the
# injected files' mtime). OE-core would take it from the youngest file in ${S}: here the
# injected scripts, whose mtimes are those of each builder's checkout of the layer (git writes
# files at checkout time), in no task signature, so two builders would make different bytes
# under one signature. OE-core's rule for sources that are all local files (oe.reproducible:
# "not from a tarball") is SOURCE_DATE_EPOCH_FALLBACK; a recipe sets it as OE-core's own
# xorg-minimal-fonts does. The fallback then is an input of the blobs, so it is in the
# signatures of the tasks that write the spec.
SOURCE_DATE_EPOCH = "${SOURCE_DATE_EPOCH_FALLBACK}"

# The outputs depend on MACHINE (the inputs' names, the README, the deploy directory).
PACKAGE_ARCH = "${MACHINE_ARCH}"

# Anonymous python, because all of this depends on the configuration: the check for the
# scripts, the tasks of deploy-only or package-only recipes, nostamp only with VXN_FORCE_BUILD,
# mcdepends only when the multiconfig is enabled, file-checksums for what nothing builds.
# nooelint: oelint.task.noanonpython
python __anonymous() {
    try:
        vxn_inject_entries(d)
    except ValueError as e:
        bb.fatal(str(e))

    scripts = d.getVar('VXN_SCRIPTS_DIR')
    if not scripts:
        raise bb.parse.SkipRecipe("no layer in BBLAYERS has %s (meta-virtualization's vcontainer "
                                  "init scripts): add meta-virtualization or set VXN_SCRIPTS_DIR"
                                  % d.getVar('VXN_SCRIPTS_SUBDIR'))
    if not os.path.isdir(scripts):
        raise bb.parse.SkipRecipe("VXN_SCRIPTS_DIR (%s) is not a directory" % scripts)

    install = bb.utils.to_boolean(d.getVar('VXN_INSTALL_BLOBS'))
    deploy = bb.utils.to_boolean(d.getVar('VXN_DEPLOY_BLOBS'))
    if not install and not deploy:
        bb.fatal("VXN_INSTALL_BLOBS and VXN_DEPLOY_BLOBS are both 0: %s would make nothing" % d.getVar('PN'))
    # Deleted, not [noexec] as in the seed: a noexec task keeps its dependencies, and those of
    # do_populate_sysroot and do_package would build binutils-cross and the packaging tools
    # for nothing. Nothing builds against the blobs, so there is never a sysroot to populate.
    for task in ['do_populate_sysroot', 'do_populate_sysroot_setscene'] + \
            ([] if install else d.getVar('VXN_PACKAGING_TASKS').split()) + \
            ([] if deploy else ['do_deploy', 'do_deploy_setscene']):
        bb.build.deltask(task, d)

    # After sstate_task_postfunc, which sstate.bbclass's anonymous python (run before this one)
    # has just put last: the set is published once sstate has installed it.
    if deploy and bb.data.inherits_class('sstate', d):
        d.appendVarFlag('do_deploy', 'postfuncs', ' vxn_publish_deploy')

    if bb.utils.to_boolean(d.getVar('VXN_FORCE_BUILD')):
        for task in ('do_compile', 'do_deploy', 'do_install'):
            d.setVarFlag(task, 'nostamp', '1')
        d.setVar('SSTATE_SKIP_CREATION:task-deploy', '1')

    # Only when the multiconfig exists: a static mcdepends on a missing multiconfig breaks
    # parsing (and yocto-check-layer). The "from" part is this configuration, so that the
    # dependency also holds when this recipe is built inside another multiconfig.
    mc = d.getVar('VXN_MULTICONFIG')
    produced = ''
    if mc in (d.getVar('BBMULTICONFIG') or '').split():
        here = d.getVar('BB_CURRENT_MC') or ''
        runtime = d.getVar('VXN_RUNTIME')
        d.setVarFlag('do_compile', 'mcdepends', ' '.join([
            'mc:%s:%s:%s-tiny-initramfs-image:do_image_complete' % (here, mc, runtime),
            'mc:%s:%s:%s-rootfs-image:do_image_complete' % (here, mc, runtime),
            'mc:%s:%s:virtual/kernel:do_deploy' % (here, mc),
        ]))
        produced = d.getVar('VXN_MC_DEPLOY_DIR')
    # Inputs that no task of this build makes are in the signature by content. BitBake reads
    # [file-checksums] when it prepares the run queue, before any task runs: right for files
    # that exist beforehand, wrong for what the mcdepends are about to build (their task
    # hashes carry those). A glob, so that a missing file is no warning, only an absent input.
    checksums = ['%s*:True' % path for path in vxn_input_paths(d)
                 if not (produced and path.startswith(produced.rstrip('/') + '/'))]
    if checksums:
        d.appendVarFlag('do_compile', 'file-checksums', ' ' + ' '.join(checksums))
}

# Every path an input may be read from: the initramfs, the rootfs and each kernel candidate.
def vxn_input_paths(d):
    name = d.getVar('VXN_KERNEL_IMAGETYPE')
    kernels = [os.path.join(directory, name) for directory in (d.getVar('VXN_KERNEL_DIRS') or '').split()]
    return [d.getVar('VXN_INITRAMFS'), d.getVar('VXN_ROOTFS')] + kernels

# The first VXN_KERNEL_DIRS entry holding the kernel; when none does, the first candidate, so
# that vxn-blobs names where the kernel was expected.
def vxn_kernel_path(d):
    name = d.getVar('VXN_KERNEL_IMAGETYPE')
    dirs = (d.getVar('VXN_KERNEL_DIRS') or '').split()
    for directory in dirs:
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate):
            return candidate
    return os.path.join(dirs[0], name) if dirs else name

# Written with json (never by shell quoting) before each task, from the current configuration.
vxn_write_spec[doc] = "Writes VXN_SPEC, the vxn-blobs spec (docs/spec.md), from the VXN_* variables."
# The thread count changes how fast the tool works, never the bytes it writes (docs/engine.md),
# as OE-core leaves PARALLEL_MAKE out: in the signatures it would keep builders with another
# VXN_JOBS (${BB_NUMBER_THREADS} on each) from restoring each other's do_deploy from sstate.
vxn_write_spec[vardepsexclude] += "VXN_JOBS"
# OE-core leaves SOURCE_DATE_EPOCH out of every signature (it follows the sources); this
# class's follows SOURCE_DATE_EPOCH_FALLBACK (see SOURCE_DATE_EPOCH above).
vxn_write_spec[vardeps] += "SOURCE_DATE_EPOCH_FALLBACK"
python vxn_write_spec() {
    import json

    spec = {
        "schema": 1,
        "runtime": d.getVar('VXN_RUNTIME'),
        "machine": d.getVar('MACHINE'),
        "multiconfig": d.getVar('VXN_MULTICONFIG'),
        "target_arch": d.getVar('TARGET_ARCH'),
        "blob_arch": d.getVar('VXN_BLOB_ARCH'),
        "initramfs": d.getVar('VXN_INITRAMFS'),
        "rootfs": d.getVar('VXN_ROOTFS'),
        "kernel": vxn_kernel_path(d),
        "kernel_name": d.getVar('VXN_KERNEL_IMAGETYPE'),
        "kernel_required": bb.utils.to_boolean(d.getVar('VXN_KERNEL_REQUIRED')),
        "inject": [
            {"source": os.path.join(d.getVar('S'), src), "dest": dest, "mode": mode}
            for src, dest, mode in vxn_inject_entries(d)
        ],
        "build_dir": d.getVar('B'),
        "deploy_dir": d.getVar('DEPLOYDIR'),
        "install_dir": d.getVar('VXN_INSTALL_DIR'),
        "compression": d.getVar('VXN_COMPRESSION'),
        "check": d.getVar('VXN_CHECK'),
    }
    jobs = d.getVar('VXN_JOBS')
    if jobs:
        try:
            spec["jobs"] = int(jobs)
        except ValueError:
            bb.fatal("VXN_JOBS must be a number of threads, not '%s'" % jobs)
    cache = d.getVar('VXN_BLOCK_CACHE')
    if cache:
        spec["block_cache"] = {
            "dir": cache,
            "max_size": d.getVar('VXN_BLOCK_CACHE_SIZE') or None,
            "read_only": bb.utils.to_boolean(d.getVar('VXN_BLOCK_CACHE_READ_ONLY')),
        }
    sde = d.getVar('SOURCE_DATE_EPOCH')
    if sde:
        try:
            spec["source_date_epoch"] = int(sde)
        except ValueError:
            bb.fatal("SOURCE_DATE_EPOCH must be an integer, not '%s'" % sde)

    path = d.getVar('VXN_SPEC')
    bb.utils.mkdirhier(os.path.dirname(path))
    with open(path + '.tmp', 'w') as f:
        json.dump(spec, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(path + '.tmp', path)
    bb.note("vxn-blobs spec: %s (kernel: %s)" % (path, spec["kernel"]))
}
# Where blocks are cached changes how fast, never what: a builder with another cache, or none,
# must restore and share the same sstate objects.
vxn_write_spec[vardepsexclude] += "VXN_BLOCK_CACHE VXN_BLOCK_CACHE_SIZE VXN_BLOCK_CACHE_READ_ONLY"

# The seed warned on the console when the kernel was missing; keep that (the tool's own warning
# only reaches the task log). With VXN_KERNEL_REQUIRED the tool fails the task instead.
vxn_warn_missing_kernel[doc] = "Warns on the console when no VXN_KERNEL_DIRS entry holds the kernel."
python vxn_warn_missing_kernel() {
    kernel = vxn_kernel_path(d)
    if not os.path.exists(kernel) and not bb.utils.to_boolean(d.getVar('VXN_KERNEL_REQUIRED')):
        bb.warn("Kernel not found at %s (nor elsewhere in VXN_KERNEL_DIRS): the blobs will have no "
                "kernel. Set VXN_KERNEL_REQUIRED = \"1\" to make this an error." % kernel)
}

do_compile[doc] = "Assembles initramfs.cpio.gz, rootfs.img (VXN_INJECT written into VXN_ROOTFS) and the kernel in ${B} with vxn-blobs compile."
do_compile[prefuncs] += "vxn_write_spec vxn_warn_missing_kernel"
do_compile[progress] = "percent"
do_compile() {
    vxn-blobs compile --spec "${VXN_SPEC}" --progress ||
        bbfatal "vxn-blobs compile failed for ${VXN_SPEC}; its error is above in this log"
}

# The packaging tasks a deploy-only recipe (VXN_INSTALL_BLOBS = "0") does not have; then
# PACKAGES = "" also keeps rootfs builds from looking for its package manifests.
VXN_PACKAGING_TASKS = "do_install do_package do_packagedata do_package_qa \
                       do_package_write_rpm do_package_write_ipk do_package_write_deb \
                       do_package_write_tar do_package_setscene do_packagedata_setscene \
                       do_package_qa_setscene do_package_write_rpm_setscene \
                       do_package_write_ipk_setscene do_package_write_deb_setscene"
VXN_PACKAGING_TASKS[doc] = "Tasks deleted from a deploy-only recipe."
PACKAGES = "${@'${PN}' if bb.utils.to_boolean(d.getVar('VXN_INSTALL_BLOBS')) else ''}"
FILES:${PN} += "${VXN_INSTALL_DIR}"
# Prebuilt blobs for another system (the DomU): nothing to strip or split, and no file in them
# is a program of the Dom0 whose dependencies could be found.
INHIBIT_PACKAGE_STRIP = "1"
INHIBIT_PACKAGE_DEBUG_SPLIT = "1"
# (SKIP_FILEDEPS is read by OE-core's package.bbclass; oelint's variable list lacks it.)
# nooelint: oelint.vars.mispell.unknown
SKIP_FILEDEPS = "1"

do_install[doc] = "With VXN_INSTALL_BLOBS: installs the blobs of do_compile and SHA256SUMS into ${D}${VXN_INSTALL_DIR} with vxn-blobs install."
do_install[prefuncs] += "vxn_write_spec"
do_install() {
    vxn_run_placing install --destdir "${D}"
}

do_deploy[doc] = "Installs the blobs, a README and SHA256SUMS into ${DEPLOYDIR}/vxn/${VXN_BLOB_ARCH}/ with vxn-blobs deploy."
do_deploy[prefuncs] += "vxn_write_spec"
do_deploy() {
    vxn_run_placing deploy
}

# Runs `vxn-blobs deploy` or `install` (and its arguments). The tool's findings about the boot
# (VXN_CHECK = "warn") become bbwarn lines, so that they reach the console and the build's
# summary, not only the task log; everything it says stays in the log as well.
vxn_run_placing[doc] = "Runs vxn-blobs deploy or install with VXN_SPEC and turns the boot check's findings into bbwarn lines."
vxn_run_placing() {
    command=$1
    shift
    failed=""
    vxn-blobs $command --spec "${VXN_SPEC}" "$@" 2>"${T}/vxn-blobs-$command.stderr" || failed=1
    cat "${T}/vxn-blobs-$command.stderr" >&2
    grep '^vxn-blobs: warning: check: ' "${T}/vxn-blobs-$command.stderr" | while read -r line; do
        bbwarn "${line#vxn-blobs: warning: }"
    done
    [ -z "$failed" ] ||
        bbfatal "vxn-blobs $command failed for ${VXN_SPEC}; its error is above in this log (VXN_CHECK decides what a failed boot check does)"
}

addtask deploy after do_compile before do_build

# sstate copies do_deploy's output into DEPLOY_DIR_IMAGE directories first, then the files one
# by one (oe.path.copyhardlinktree), and removes it file by file: for a few milliseconds of
# every install vxn/<arch>/ would exist empty or incomplete (tests/oe/test_faults.py saw it),
# and a build killed then would leave it so. So sstate installs the set into a hidden directory, and vxn_publish_deploy makes
# vxn/<arch>/ from it with one rename: it appears, or is replaced, whole.
VXN_SSTATE_DEPLOY_DIR = "${DEPLOY_DIR_IMAGE}/.vxn-sstate"
VXN_SSTATE_DEPLOY_DIR[doc] = "Where sstate installs do_deploy's output; vxn_publish_deploy publishes ${DEPLOY_DIR_IMAGE}/vxn/<arch>/ from it atomically (hardlinks)."
do_deploy[sstate-outputdirs] = "${VXN_SSTATE_DEPLOY_DIR}"
do_deploy_setscene[postfuncs] += "vxn_publish_deploy"

# Swaps two directories with renameat2(RENAME_EXCHANGE) and returns True, or returns False when
# `final` does not exist. Where the kernel or the file system cannot exchange, `final` is moved
# aside first (absent for a moment, never incomplete) and the caller removes `new` all the same.
def vxn_exchange_dirs(new, final):
    import ctypes, errno
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, 'renameat2', None)
    if renameat2 is not None:
        if renameat2(-100, os.fsencode(new), -100, os.fsencode(final), 2) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.ENOENT and not os.path.lexists(final):
            return False
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), final)
    if not os.path.lexists(final):
        return False
    aside = new + '.aside'
    os.rename(final, aside)
    os.rename(new, final)
    os.rename(aside, new)
    return True

vxn_publish_deploy[doc] = "Publishes ${DEPLOY_DIR_IMAGE}/vxn/<arch>/ from the sstate-installed copy with one rename."
python vxn_publish_deploy() {
    import shlex, shutil, tempfile
    arch = d.getVar('VXN_BLOB_ARCH')
    staged = os.path.join(d.getVar('VXN_SSTATE_DEPLOY_DIR'), 'vxn', arch)
    top = os.path.join(d.getVar('DEPLOY_DIR_IMAGE'), 'vxn')
    final = os.path.join(top, arch)
    bb.utils.mkdirhier(top)
    lock = bb.utils.lockfile(os.path.join(top, '.%s.lock' % arch))
    try:
        # What a build killed in here left.
        for name in os.listdir(top):
            if name.startswith('.%s.new-' % arch):
                shutil.rmtree(os.path.join(top, name), ignore_errors=True)
        new = tempfile.mkdtemp(prefix='.%s.new-' % arch, dir=top)
        for name in sorted(os.listdir(staged)):
            os.link(os.path.join(staged, name), os.path.join(new, name))
        os.chmod(new, 0o755)
        if vxn_exchange_dirs(new, final):
            shutil.rmtree(new)  # the previous set, swapped out
        else:
            os.rename(new, final)
    finally:
        bb.utils.unlockfile(lock)
    # When sstate removes its copy (do_deploy reruns, cleansstate), the published set goes too,
    # moved aside in one rename before it is deleted.
    postrm = d.getVar('SSTATE_INST_POSTRM')
    if postrm:
        with open(postrm, 'w') as f:
            f.write('#!/bin/sh\n# vxn-initramfs-create.bbclass: vxn/%s/ goes with the sstate copy it was published from.\n'
                    'aside=%s/.%s.new-removed-$$\n'
                    'if mv %s "$aside" 2>/dev/null; then rm -rf "$aside"; fi\n'
                    % (arch, shlex.quote(top), arch, shlex.quote(final)))
    bb.note("published %s" % final)
}

# sstate unpacks do_deploy's output (from an sstate object, or as the task just left it) before
# it copies it into DEPLOY_DIR_IMAGE: check it there against its SHA256SUMS, so that a damaged
# object (bit rot, a bad mirror, a copy cut short) fails do_deploy_setscene and BitBake runs
# do_compile and do_deploy instead of deploying broken blobs. A truncated object already fails
# in tar; one whose archive is intact but whose files are not would otherwise be deployed.
SSTATEPOSTUNPACKFUNCS:append = " vxn_verify_deploy_sstate"
vxn_verify_deploy_sstate[doc] = "Fails the sstate install of do_deploy when the unpacked vxn/<arch>/ does not match its SHA256SUMS."
python vxn_verify_deploy_sstate() {
    import hashlib
    if d.getVar('SSTATE_CURRTASK') != 'deploy':
        return
    arch = d.getVar('VXN_BLOB_ARCH')
    top = os.path.join(d.getVar('SSTATE_INSTDIR'), os.path.basename(os.path.normpath(d.getVar('DEPLOYDIR'))))
    where = os.path.join(top, 'vxn', arch)
    setscene = d.getVar('BB_CURRENTTASK').endswith('_setscene')
    origin = d.getVar('SSTATE_PKG') if setscene else 'do_deploy'

    # From sstate a warning, as BitBake's own for an object tar cannot unpack: the setscene task
    # fails, the real tasks run, and the build succeeds. From do_deploy itself an error.
    def damaged(problem):
        if not setscene:
            bb.fatal("the output of do_deploy does not match its SHA256SUMS: %s" % problem)
        bb.warn("the do_deploy sstate object %s is damaged: %s. BitBake runs do_compile and "
                "do_deploy instead; remove the object, or every build that finds it will" % (origin, problem))
        raise bb.BBHandledException()

    if not os.path.isdir(where):
        damaged("it holds no vxn/%s/" % arch)
    try:
        with open(os.path.join(where, 'SHA256SUMS'), encoding='utf-8') as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        damaged("SHA256SUMS cannot be read (%s)" % e)
    listed = {}
    for line in lines:
        digest, sep, name = line.partition('  ')
        if not sep or len(digest) != 64 or not name or '/' in name:
            damaged("SHA256SUMS has a line that is not '<sha256>  <name>': %r" % line)
        listed[name] = digest
    present = set(os.listdir(where)) - {'SHA256SUMS'}
    if present != set(listed):
        damaged("its files (%s) are not those SHA256SUMS lists (%s)"
                % (", ".join(sorted(present)), ", ".join(sorted(listed))))
    for name, digest in sorted(listed.items()):
        h = hashlib.sha256()
        with open(os.path.join(where, name), 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
        if h.hexdigest() != digest:
            damaged("%s does not match SHA256SUMS" % name)
    bb.note("vxn/%s/ from %s matches its SHA256SUMS (%d files)" % (arch, origin, len(listed)))
}
