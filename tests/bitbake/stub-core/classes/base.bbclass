# Stand-in for OE-core's base.bbclass: the task chain meta-vxn uses, with the real bb.fetch2
# doing fetch and unpack (local files only in these tests).

inherit logging

BB_DEFAULT_TASK ?= "build"

# OE-core's FILESPATH: FILESEXTRAPATHS first, then the recipe's own directories (overrides
# subdirectories left out).
def base_set_filespath(path, d):
    filespath = [p for p in (d.getVar("FILESEXTRAPATHS") or "").split(":") if p]
    filespath.extend(d.expand(p) for p in path)
    return ":".join(filespath)

addtask fetch
do_fetch[dirs] = "${DL_DIR}"
python do_fetch() {
    src_uri = (d.getVar('SRC_URI') or "").split()
    if src_uri:
        bb.fetch2.Fetch(src_uri, d).download()
}

# As in OE-core: scarthgap unpacks into WORKDIR, later series into UNPACKDIR; styhead and
# walnascar then move an S of the form ${WORKDIR}/<dir> out of UNPACKDIR into place.
addtask unpack after do_fetch
python do_unpack() {
    import shutil
    src_uri = (d.getVar('SRC_URI') or "").split()
    workdir = d.getVar('WORKDIR')
    rootdir = d.getVar('UNPACKDIR') or workdir
    bb.utils.mkdirhier(rootdir)
    if not src_uri:
        return
    bb.fetch2.Fetch(src_uri, d).unpack(rootdir)
    sourcedir = d.getVar('S')
    if rootdir != workdir and sourcedir.startswith(workdir) and not sourcedir.startswith(rootdir):
        basedir = sourcedir[len(workdir):].strip('/').split('/')[0]
        if basedir and os.path.exists(os.path.join(rootdir, basedir)):
            bb.utils.remove(os.path.join(workdir, basedir), True)
            shutil.move(os.path.join(rootdir, basedir), os.path.join(workdir, basedir))
}

addtask configure after do_unpack
do_configure() {
	:
}

addtask compile after do_configure
do_compile[dirs] = "${B}"
do_compile() {
	:
}

addtask install after do_compile
do_install[dirs] = "${B}"
do_install[cleandirs] = "${D}"
do_install() {
	:
}

# OE-core's sysroot and packaging tasks, by name and place only: meta-vxn deletes the ones a
# deploy-only recipe has no use for, and the tests check which remain.
addtask populate_sysroot after do_install before do_build
addtask package after do_install before do_build
addtask packagedata after do_package before do_build
addtask package_qa after do_packagedata before do_build
addtask package_write_ipk after do_packagedata before do_build
python do_populate_sysroot() {
}
python do_package() {
}
python do_packagedata() {
}
python do_package_qa() {
}
python do_package_write_ipk() {
}

addtask build after do_install
do_build[noexec] = "1"
do_build() {
	:
}
