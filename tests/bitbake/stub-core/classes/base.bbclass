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

# As in OE-core: scarthgap unpacks into WORKDIR, later series into UNPACKDIR.
addtask unpack after do_fetch
python do_unpack() {
    src_uri = (d.getVar('SRC_URI') or "").split()
    rootdir = d.getVar('UNPACKDIR') or d.getVar('WORKDIR')
    bb.utils.mkdirhier(rootdir)
    if src_uri:
        bb.fetch2.Fetch(src_uri, d).unpack(rootdir)
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
do_install() {
	:
}

addtask build after do_install
do_build[noexec] = "1"
do_build() {
	:
}
