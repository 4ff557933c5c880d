"""vxn-initramfs-create's tasks executed by bb.build with the real vxn-blobs on PATH.

Inputs are generated per test where the vruntime multiconfig would deploy them: a gzip squashfs
rootfs (mksquashfs), a gzip newc cpio initramfs with /init, a kernel with a valid header. The
tool is staged in ${STAGING_BINDIR_NATIVE}, as do_prepare_recipe_sysroot does for
vxn-blobs-native. What they guard: fetch/unpack of the scripts, the spec handed over, progress
reaching BitBake, the deploy tree, and a tool failure ending the task with the tool's message.
"""

import gzip
import hashlib
import os
import shutil
import stat
import subprocess

import pytest

from bbharness import VXN_RECIPE, Build, find_tool, make_meta_virt, missing, recipe_path, run_task

ARCHES = {
    # TARGET_ARCH: (multiconfig, blob arch, kernel name)
    "x86_64": ("vruntime-x86-64", "x86_64", "bzImage"),
    "aarch64": ("vruntime-aarch64", "aarch64", "Image"),
}


def newc_cpio(entries):
    """A newc ("070701") cpio archive of (name, mode, data) entries plus the trailer."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        namez = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(namez), 0]
        out += b"070701" + b"".join(b"%08X" % v for v in fields) + namez
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def kernel_image(arch):
    image = bytearray(4096)
    if arch == "x86_64":
        image[0x1FE:0x200] = b"\x55\xaa"
        image[0x202:0x206] = b"HdrS"
    else:
        image[0x38:0x3C] = b"ARM\x64"
    return bytes(image)


def make_rootfs(path, workdir):
    mksquashfs = shutil.which("mksquashfs")
    if not mksquashfs:
        missing("mksquashfs (squashfs-tools) is needed to make the rootfs fixture")
    tree = os.path.join(workdir, "rootfs-tree")
    for sub in ("bin", "sbin", "etc", "dev"):
        os.makedirs(os.path.join(tree, sub))
    # What the boot check of do_deploy looks for: the preinit's /sbin/init and a /bin/sh.
    os.symlink("../bin/sh", os.path.join(tree, "sbin", "init"))
    with open(os.path.join(tree, "etc", "hostname"), "w") as f:
        f.write("vxn\n")
    with open(os.path.join(tree, "bin", "sh"), "wb") as f:
        f.write(b"\x7fELF not really\n")
    os.chmod(os.path.join(tree, "bin", "sh"), 0o755)
    subprocess.run([mksquashfs, tree, path, "-comp", "gzip", "-noappend", "-all-root", "-quiet",
                    "-no-progress"], check=True, stdout=subprocess.DEVNULL)


class Scenario:
    """A parsed vxn-initramfs-create with its multiconfig inputs on disk and the tool staged."""

    def __init__(self, bb, tmp_path, arch="x86_64", local=None, rootfs=True, kernel="mc", series="wrynose"):
        self.bb = bb
        self.mc, self.blob_arch, self.kernel_name = ARCHES[arch]
        settings = {"TARGET_ARCH": arch}
        settings.update(local or {})
        build = Build(bb, tmp_path / "build", series=series, local=settings, layers=[make_meta_virt(tmp_path)])
        self.d = build.parse(VXN_RECIPE)[""]
        self.fn = VXN_RECIPE
        d = self.d

        mcdir = d.getVar("VXN_MC_DEPLOY_DIR")
        os.makedirs(mcdir)
        self.initramfs = newc_cpio([("init", 0o100755, b"#!/bin/sh\nexec switch_root\n")])
        with gzip.open(d.getVar("VXN_INITRAMFS"), "wb") as f:
            f.write(self.initramfs)
        if rootfs:
            make_rootfs(d.getVar("VXN_ROOTFS"), str(tmp_path))
        self.kernel = kernel_image(arch)
        if kernel:
            kdir = mcdir if kernel == "mc" else d.getVar("DEPLOY_DIR_IMAGE")
            os.makedirs(kdir, exist_ok=True)
            with open(os.path.join(kdir, self.kernel_name), "wb") as f:
                f.write(self.kernel)

        bindir = d.getVar("STAGING_BINDIR_NATIVE")
        os.makedirs(bindir)
        os.symlink(find_tool(), os.path.join(bindir, "vxn-blobs"))

    def run(self, *tasks):
        for task in tasks:
            status = run_task(self.bb, self.fn, self.d, task)
            if status:
                return status
        return 0

    def log(self, task):
        with open(os.path.join(self.d.getVar("T"), "log." + task), encoding="utf-8", errors="replace") as f:
            return f.read()

    @property
    def deployed(self):
        return os.path.join(self.d.getVar("DEPLOYDIR"), "vxn", self.blob_arch)


def squashfs_compressor(image):
    """The superblock's compressor id (offset 20, little-endian u16): 1 gzip, 4 xz."""
    with open(image, "rb") as f:
        head = f.read(22)
    assert head[:4] == b"hsqs", "%s is not a squashfs image" % image
    return int.from_bytes(head[20:22], "little")


def squashfs_listing(image):
    unsquashfs = shutil.which("unsquashfs")
    if not unsquashfs:
        missing("unsquashfs (squashfs-tools) is needed to inspect rootfs.img")
    out = subprocess.run([unsquashfs, "-lln", "-d", "", image], check=True, capture_output=True, text=True)
    return out.stdout


def squashfs_cat(image, path):
    out = subprocess.run(["unsquashfs", "-cat", image, path], check=True, capture_output=True)
    return out.stdout


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_compile_and_deploy_produce_the_deploy_tree(bblib, tmp_path, recorder, arch):
    sc = Scenario(bblib, tmp_path, arch=arch)
    assert sc.run("do_fetch", "do_unpack", "do_compile", "do_deploy") == 0, sc.log("do_compile")

    out = sc.deployed
    names = sorted(os.listdir(out))
    assert names == sorted([sc.kernel_name, "initramfs.cpio.gz", "rootfs.img", "README", "SHA256SUMS"])
    for name in names:
        assert stat.S_IMODE(os.stat(os.path.join(out, name)).st_mode) == 0o644, name
    with gzip.open(os.path.join(out, "initramfs.cpio.gz")) as f:
        assert f.read() == sc.initramfs
    with open(os.path.join(out, sc.kernel_name), "rb") as f:
        assert f.read() == sc.kernel

    rootfs = os.path.join(out, "rootfs.img")
    assert squashfs_compressor(rootfs) == 4, "VXN_COMPRESSION defaults to xz, as the seed's mksquashfs -comp xz"
    listing = squashfs_listing(rootfs)
    for script in ("vxn-init.sh", "vcontainer-init-common.sh"):
        line = [l for l in listing.splitlines() if l.endswith(" /" + script)]
        assert line and line[0].startswith("-rwxr-xr-x"), listing
        with open(os.path.join(sc.d.getVar("S"), script), "rb") as f:
            assert squashfs_cat(rootfs, "/" + script) == f.read()
    assert squashfs_cat(rootfs, "/etc/hostname") == b"vxn\n"

    with open(os.path.join(out, "README"), encoding="utf-8") as f:
        readme = f.read()
    for field in ("Built for: %s" % arch, "Machine: qemux86-64", "Multiconfig: %s" % sc.mc,
                  "Source runtime: vdkr"):
        assert field in readme
    sums = {}
    with open(os.path.join(out, "SHA256SUMS"), encoding="utf-8") as f:
        for line in f:
            digest, name = line.split()
            sums[name.lstrip("*")] = digest
    for name in names:
        if name != "SHA256SUMS":
            with open(os.path.join(out, name), "rb") as f:
                assert sums[name] == hashlib.sha256(f.read()).hexdigest(), name

    # The percent handler turned the tool's "NN%" lines into TaskProgress events for do_compile.
    progress = recorder.progress_of("do_compile")
    assert progress, "no TaskProgress from do_compile"
    assert all(0 <= e.progress <= 100 for e in progress)
    assert max(e.progress for e in progress) == 100
    assert recorder.of("TaskSucceeded")


@pytest.mark.parametrize("series,unpacked_into", [
    ("scarthgap", ""), ("styhead", ""), ("whinlatter", "sources")])
def test_scripts_reach_rootfs_with_each_series_unpack_layout(bblib, tmp_path, recorder, series, unpacked_into):
    """The scripts unpack into ${BP}: WORKDIR/${BP} on scarthgap and (moved there) on styhead,
    UNPACKDIR/${BP} from whinlatter on; S is that directory on each."""
    sc = Scenario(bblib, tmp_path, series=series)
    assert sc.run("do_fetch", "do_unpack", "do_compile", "do_deploy") == 0, sc.log("do_compile")
    where = os.path.join(sc.d.getVar("WORKDIR"), unpacked_into, sc.d.getVar("BP"), "vxn-init.sh")
    assert os.path.dirname(where) == sc.d.getVar("S")
    with open(where, "rb") as f:
        assert squashfs_cat(os.path.join(sc.deployed, "rootfs.img"), "/vxn-init.sh") == f.read()


def test_compression_and_jobs_knobs_reach_the_tool(bblib, tmp_path, recorder):
    sc = Scenario(bblib, tmp_path, local={"VXN_COMPRESSION": "keep", "VXN_JOBS": "1"})
    assert sc.run("do_fetch", "do_unpack", "do_compile", "do_deploy") == 0, sc.log("do_compile")
    assert squashfs_compressor(os.path.join(sc.deployed, "rootfs.img")) == 1  # the input's gzip


def test_rerun_reuses_and_gives_identical_blobs(bblib, tmp_path, recorder):
    """nostamp reruns are cheap and harmless: same bytes out."""
    sc = Scenario(bblib, tmp_path)
    assert sc.run("do_fetch", "do_unpack", "do_compile", "do_deploy") == 0, sc.log("do_compile")
    first = {n: open(os.path.join(sc.deployed, n), "rb").read() for n in os.listdir(sc.deployed)}
    assert sc.run("do_compile", "do_deploy") == 0, sc.log("do_compile")
    second = {n: open(os.path.join(sc.deployed, n), "rb").read() for n in os.listdir(sc.deployed)}
    assert first == second


def test_missing_rootfs_fails_compile_with_the_tools_hint(bblib, tmp_path, recorder):
    sc = Scenario(bblib, tmp_path, rootfs=False)
    assert sc.run("do_fetch", "do_unpack") == 0
    assert sc.run("do_compile") != 0
    log = sc.log("do_compile")
    assert sc.d.getVar("VXN_ROOTFS") in log
    assert "bitbake mc:vruntime-x86-64:vdkr-rootfs-image" in log
    assert "vxn-blobs compile failed" in log
    assert [e for e in recorder.of("TaskFailed") if e.taskname == "do_compile"]
    assert not os.path.exists(os.path.join(sc.d.getVar("B"), "rootfs.img"))


def test_kernel_falls_back_to_deploy_dir_image(bblib, tmp_path, recorder):
    sc = Scenario(bblib, tmp_path, kernel="main")
    assert sc.run("do_fetch", "do_unpack", "do_compile", "do_deploy") == 0, sc.log("do_compile")
    assert not [r for r in recorder.records if "Kernel not found" in r.getMessage()]
    with open(os.path.join(sc.deployed, "bzImage"), "rb") as f:
        assert f.read() == sc.kernel


def test_missing_kernel_warns_by_default(bblib, tmp_path, recorder):
    sc = Scenario(bblib, tmp_path, kernel=None)
    assert sc.run("do_fetch", "do_unpack", "do_compile", "do_deploy") == 0, sc.log("do_compile")
    assert "bzImage" not in os.listdir(sc.deployed)
    assert "rootfs.img" in os.listdir(sc.deployed)
    # As the seed's bbwarn: visible on the console, not only in the task log.
    warnings = [r.getMessage() for r in recorder.records if r.levelname == "WARNING"]
    assert any("Kernel not found at" in w and "VXN_KERNEL_REQUIRED" in w for w in warnings), warnings


def test_missing_kernel_is_fatal_with_vxn_kernel_required(bblib, tmp_path, recorder):
    sc = Scenario(bblib, tmp_path, kernel=None, local={"VXN_KERNEL_REQUIRED": "1"})
    assert sc.run("do_fetch", "do_unpack") == 0
    assert sc.run("do_compile") != 0
    log = sc.log("do_compile")
    assert os.path.join(sc.d.getVar("VXN_MC_DEPLOY_DIR"), "bzImage") in log
    assert "vxn-blobs compile failed" in log


def test_deploy_without_compile_fails_clearly(bblib, tmp_path, recorder):
    sc = Scenario(bblib, tmp_path)
    assert sc.run("do_fetch", "do_unpack") == 0
    assert sc.run("do_deploy") != 0
    assert "vxn-blobs deploy failed" in sc.log("do_deploy")
    assert not os.path.exists(os.path.join(sc.deployed, "rootfs.img"))


def test_install_puts_the_blobs_into_D_for_the_package(bblib, tmp_path, recorder):
    sc = Scenario(bblib, tmp_path, local={"VXN_INSTALL_BLOBS": "1", "VXN_DEPLOY_BLOBS": "0",
                                          "DISTRO_FEATURES": "virtualization xen"})
    assert sc.run("do_fetch", "do_unpack", "do_compile", "do_install") == 0, sc.log("do_install")
    installed = sc.d.expand("${D}${VXN_INSTALL_DIR}")
    assert installed.endswith("/image/usr/share/vxn/x86_64")
    assert sorted(os.listdir(installed)) == ["SHA256SUMS", "bzImage", "initramfs.cpio.gz", "rootfs.img"]
    for name in os.listdir(installed):
        st = os.stat(os.path.join(installed, name))
        assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_nlink == 1, name
    with open(os.path.join(installed, "bzImage"), "rb") as f:
        assert f.read() == sc.kernel
    assert squashfs_compressor(os.path.join(installed, "rootfs.img")) == 4
    assert "install: installed into %s" % installed in sc.log("do_install")


# An init the DomU could not run: injected with mode 0644.
INIT_NOT_EXECUTABLE = "vxn-init.sh:/vxn-init.sh:0644 vcontainer-init-common.sh:/vcontainer-init-common.sh:0755"


def assert_warned_not_executable(records, since=0):
    """The boot check's finding about /vxn-init.sh reached BitBake as a warning."""
    warnings = [r.getMessage() for r in records if r.levelname == "WARNING"][since:]
    assert any(w.startswith("check: ") and "/vxn-init.sh" in w and "not executable" in w
               for w in warnings), warnings


@pytest.mark.parametrize("mode", ["warn", "error"])
def test_boot_check_findings_reach_bitbake(bblib, tmp_path, recorder, mode):
    """An init the DomU could not run (mode 0644): a bbwarn with VXN_CHECK = "warn", a failed
    do_deploy with "error"."""
    sc = Scenario(bblib, tmp_path, local={"VXN_CHECK": mode, "VXN_INJECT": INIT_NOT_EXECUTABLE})
    assert sc.run("do_fetch", "do_unpack", "do_compile") == 0, sc.log("do_compile")
    status = sc.run("do_deploy")
    if mode == "warn":
        assert status == 0, sc.log("do_deploy")
        assert_warned_not_executable(recorder.records)
    else:
        assert status != 0
        log = sc.log("do_deploy")
        assert "refusing to deploy" in log and "not executable" in log, log
        assert "VXN_CHECK decides" in log
        assert not os.path.exists(os.path.join(sc.deployed, "rootfs.img"))


# -- vxn-dom0-blobs: the Dom0 package of what vxn-initramfs-create deployed -----------------------

DOM0_RECIPE = recipe_path("recipes-core", "vxn", "vxn-dom0-blobs_1.0.bb")


class Dom0:
    """vxn-dom0-blobs parsed in the TOPDIR of a Scenario whose vxn-initramfs-create has deployed,
    its deploy copied into DEPLOY_DIR_IMAGE as sstate's deploy copy puts it there."""

    def __init__(self, bb, tmp_path, arch="x86_64", local=None, inject=None):
        settings = {"DISTRO_FEATURES": "virtualization xen"}
        if inject:
            settings["VXN_INJECT"] = inject
        self.sc = Scenario(bb, tmp_path, arch=arch, local=settings)
        assert self.sc.run("do_fetch", "do_unpack", "do_compile", "do_deploy") == 0, self.sc.log("do_compile")
        self.deployed = os.path.join(self.sc.d.getVar("DEPLOY_DIR_IMAGE"), "vxn", self.sc.blob_arch)
        shutil.copytree(self.sc.deployed, self.deployed)
        settings.update({"TARGET_ARCH": arch}, **(local or {}))
        build = Build(bb, tmp_path / "build", local=settings, layers=[str(tmp_path / "meta-virtualization")])
        self.d = build.parse(DOM0_RECIPE)[""]
        assert not self.d.getVar("__SKIPPED"), self.d.getVar("__SKIPPED")
        bindir = self.d.getVar("STAGING_BINDIR_NATIVE")
        os.makedirs(bindir)
        os.symlink(find_tool(), os.path.join(bindir, "vxn-blobs"))

    def run(self, *tasks):
        for task in tasks:
            status = run_task(self.sc.bb, DOM0_RECIPE, self.d, task)
            if status:
                return status
        return 0

    def log(self, task):
        """The task's log; BitBake removes an empty one."""
        path = os.path.join(self.d.getVar("T"), "log." + task)
        if not os.path.exists(path):
            return ""
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()

    @property
    def installed(self):
        return self.d.expand("${D}${VXN_INSTALL_DIR}")


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_dom0_blobs_packages_the_deployed_set_without_assembling_it(bblib, tmp_path, recorder, arch):
    dom0 = Dom0(bblib, tmp_path, arch=arch)
    kernel = dom0.sc.kernel_name
    # The one assembly is vxn-initramfs-create's: no tool compile, no inputs of its own.
    assert "vxn-initramfs-create:do_deploy" in dom0.d.getVarFlag("do_compile", "depends").split()
    assert dom0.d.getVarFlag("do_compile", "mcdepends") is None
    assert dom0.d.getVarFlag("do_compile", "file-checksums") is None
    assert dom0.d.getVar("SRC_URI") == ""
    assert dom0.d.getVar("VXN_DEPLOYED_BLOBS") == dom0.deployed
    assert dom0.run("do_compile", "do_install") == 0, dom0.log("do_compile") + dom0.log("do_install")
    with open(os.path.join(dom0.d.getVar("T"), "run.do_compile"), encoding="utf-8") as f:
        script = f.read()
    assert "vxn_stage_deployed_blobs" in script and "vxn-blobs compile" not in script

    # Staged as hardlinks of the deploy (same file system here), under upstream vxn's names.
    b = dom0.d.getVar("B")
    for staged, name in (("kernel", kernel), ("initramfs.cpio.gz", "initramfs.cpio.gz"), ("rootfs.img", "rootfs.img")):
        assert os.stat(os.path.join(b, staged)).st_ino == os.stat(os.path.join(dom0.deployed, name)).st_ino, staged

    # Installed: copies (not links into the deploy), 0644, byte-identical to the deploy; the
    # deploy's SHA256SUMS lines for them, in its order, which is what `vxn-blobs install` writes.
    installed = dom0.installed
    assert installed.endswith("/image/usr/share/vxn/" + dom0.sc.blob_arch)
    assert sorted(os.listdir(installed)) == sorted(["SHA256SUMS", kernel, "initramfs.cpio.gz", "rootfs.img"])
    for name in os.listdir(installed):
        st = os.stat(os.path.join(installed, name))
        assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_nlink == 1, name
        if name != "SHA256SUMS":
            assert read(os.path.join(installed, name)) == read(os.path.join(dom0.deployed, name)), name
    with open(os.path.join(dom0.deployed, "SHA256SUMS"), encoding="utf-8") as f:
        expected = "".join(l for l in f if not l.rstrip("\n").endswith("  README"))
    with open(os.path.join(installed, "SHA256SUMS"), encoding="utf-8") as f:
        assert f.read() == expected
    assert [r for r in recorder.records if r.levelname == "WARNING"] == []


def test_dom0_blobs_refuses_what_differs_from_the_deploy(bblib, tmp_path, recorder):
    dom0 = Dom0(bblib, tmp_path)
    assert dom0.run("do_compile") == 0, dom0.log("do_compile")
    staged = os.path.join(dom0.d.getVar("B"), "rootfs.img")
    os.unlink(staged)  # not the deploy's file: the staged link only
    with open(staged, "wb") as f:
        f.write(b"hsqs, but not the deployed one")
    assert dom0.run("do_install") != 0
    log = dom0.log("do_install")
    assert "differ from what vxn-initramfs-create deployed (%s)" % dom0.deployed in log, log


def test_dom0_blobs_without_the_deploy_names_the_recipe_that_makes_it(bblib, tmp_path, recorder):
    dom0 = Dom0(bblib, tmp_path)
    shutil.rmtree(dom0.deployed)
    assert dom0.run("do_compile") != 0
    log = dom0.log("do_compile")
    assert "%s/SHA256SUMS not found" % dom0.deployed in log and "bitbake vxn-initramfs-create" in log, log


@pytest.mark.parametrize("mode", ["warn", "error"])
def test_dom0_blobs_boot_check_follows_vxn_check(bblib, tmp_path, recorder, mode):
    """A deployed set with an init the DomU could not run (mode 0644; its own deploy warned):
    each finding a bbwarn with VXN_CHECK = "warn", a failed do_install with "error"."""
    dom0 = Dom0(bblib, tmp_path, local={"VXN_CHECK": mode}, inject=INIT_NOT_EXECUTABLE)
    before = len([r for r in recorder.records if r.levelname == "WARNING"])
    status = dom0.run("do_compile", "do_install")
    if mode == "warn":
        assert status == 0, dom0.log("do_install")
        assert_warned_not_executable(recorder.records, since=before)
    else:
        assert status != 0
        log = dom0.log("do_install")
        assert "vxn-blobs check found what would stop the DomU's boot" in log and "not executable" in log, log
