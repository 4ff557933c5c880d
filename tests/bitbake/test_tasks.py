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

from bbharness import VXN_RECIPE, Build, find_tool, make_meta_virt, missing, run_task

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


@pytest.mark.parametrize("mode", ["warn", "error"])
def test_boot_check_findings_reach_bitbake(bblib, tmp_path, recorder, mode):
    """An init the DomU could not run (mode 0644): a bbwarn with VXN_CHECK = "warn", a failed
    do_deploy with "error"."""
    sc = Scenario(bblib, tmp_path, local={
        "VXN_CHECK": mode,
        "VXN_INJECT": "vxn-init.sh:/vxn-init.sh:0644 vcontainer-init-common.sh:/vcontainer-init-common.sh:0755"})
    assert sc.run("do_fetch", "do_unpack", "do_compile") == 0, sc.log("do_compile")
    status = sc.run("do_deploy")
    warnings = [r.getMessage() for r in recorder.records if r.levelname == "WARNING"]
    if mode == "warn":
        assert status == 0, sc.log("do_deploy")
        assert any(w.startswith("check: ") and "/vxn-init.sh" in w and "not executable" in w
                   for w in warnings), warnings
    else:
        assert status != 0
        log = sc.log("do_deploy")
        assert "refusing to deploy" in log and "not executable" in log, log
        assert "VXN_CHECK decides" in log
        assert not os.path.exists(os.path.join(sc.deployed, "rootfs.img"))
