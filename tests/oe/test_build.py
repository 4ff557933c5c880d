"""`bitbake vxn-initramfs-create` for real: what a user's build does, and when it reruns.

One TOPDIR on the primary series (wrynose), with OE-core, meta-vxn and the stand-in layers,
OE-core's recipes masked out (see BuildDir). Each test brings the build to the state it needs
with real bitbake runs and asserts on what knotty reported and on the files the build left;
the rebuild table of docs/integration.md is what these tests print (tests/oe/run shows it).
"""

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest

import oetier
import reallayers

BASE_CONF = '''DISTRO_FEATURES:append = " virtualization vcontainer vxn"
'''
MC_X86 = 'BBMULTICONFIG = "vruntime-x86-64"\n'
RECIPE = "vxn-initramfs-create"
MC = "vruntime-x86-64"
INJECTED = {"/vxn-init.sh": "vxn-init.sh", "/vcontainer-init-common.sh": "vcontainer-init-common.sh"}


@pytest.fixture(scope="module")
def bd(tier, primary):
    layers = [oetier.meta_vxn(tier), oetier.standin_layer(tier, "meta-virt-standin"),
              oetier.standin_layer(tier, "meta-offline-standin")]
    return oetier.BuildDir(tier, primary, "build-" + primary.name, layers, mask=True)


def standin(tier, *parts):
    return oetier.standin_layer(tier, "meta-virt-standin", *parts)


def scripts_dir(tier):
    return standin(tier, "recipes-containers", "vcontainer", "files")


def deployed(bd, arch="x86_64", machine="qemux86-64"):
    return bd.path("tmp", "deploy", "images", machine, "vxn", arch)


def mc_deploy(bd, mc=MC, machine="qemux86-64"):
    return bd.path("tmp-" + mc, "deploy", "images", machine)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def listing(image):
    """`unsquashfs -lln` lines by path: "mode uid/gid size" (times and the root dropped)."""
    out = subprocess.run(["unsquashfs", "-lln", "-d", "", image], check=True, capture_output=True, text=True).stdout
    entries = {}
    for line in out.splitlines():
        fields = line.split()
        paths = [f for f in fields[3:] if f.startswith("/")]
        if paths:
            # mode, owner, then size (or "major, minor" for a device).
            entries[paths[0]] = " ".join(fields[:fields.index(paths[0]) - 2])
    return entries


def cat(image, path):
    return subprocess.run(["unsquashfs", "-cat", image, path], check=True, capture_output=True).stdout


def superblock(image):
    return subprocess.run(["unsquashfs", "-s", image], check=True, capture_output=True, text=True).stdout


def edit(path, old, new):
    """Replaces `old` by `new` in a file of the tier's copy of the checkout (ownership kept)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert old in text, "%r not in %s" % (old, path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(old, new, 1))


def record(tier, scenario, result, reran):
    """One row of the rebuild table (printed by tests/oe/run, copied into docs/integration.md)."""
    path = os.path.join(tier.work, "rebuild-table.jsonl")
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"scenario": scenario, "reran": reran, "seconds": round(result.seconds)}) + "\n")


def vxn_tasks(result):
    return [t for t in result.ran(RECIPE) if t in ("do_compile", "do_deploy", "do_deploy_setscene", "do_install")]


def test_first_build_makes_the_multiconfig_images_then_the_blobs(tier, bd):
    bd.write_conf(BASE_CONF + MC_X86)
    r = bd.bitbake(RECIPE)
    assert not r.warnings(), "\n".join(r.warnings())
    record(tier, "first build (empty TMPDIR and sstate)", r, vxn_tasks(r))

    # mcdepends: the stand-in images and kernel, in the multiconfig, before do_compile.
    compile_at = r.index(RECIPE, "do_compile")
    for recipe, task in [("vdkr-rootfs-image", "do_image_complete"),
                         ("vdkr-tiny-initramfs-image", "do_image_complete"),
                         ("linux-vruntime-standin", "do_deploy")]:
        assert r.index(recipe, task, mc=MC) < compile_at, (recipe, task)
    for name in ("vdkr-rootfs-image-qemux86-64.rootfs.squashfs", "vdkr-tiny-initramfs-image-qemux86-64.cpio.gz",
                 "bzImage"):
        assert os.path.exists(os.path.join(mc_deploy(bd), name)), name

    # vxn-blobs-native by OE-core's cargo.bbclass, offline, from the crates of vxn-blobs-crates.inc.
    assert r.index("vxn-blobs-native", "do_compile") < compile_at
    workdir = bd.path("tmp", "work", "x86_64-linux", "vxn-blobs-native", "0.1.0")
    with open(os.path.join(workdir, "temp", "log.do_compile"), encoding="utf-8", errors="replace") as f:
        log = f.read()
    assert "--frozen" in log and "Finished `release` profile" in log
    with open(os.path.join(oetier.meta_vxn(tier), "recipes-devtools", "vxn-blobs", "vxn-blobs-crates.inc")) as f:
        crates = re.findall(r"crate://crates.io/([^/]+)/(\S+) ", f.read())
    vendored = os.path.join(workdir, "sources", "cargo_home", "bitbake")
    if not os.path.isdir(vendored):  # scarthgap unpacks into WORKDIR
        vendored = os.path.join(workdir, "cargo_home", "bitbake")
    assert sorted(os.listdir(vendored)) == sorted("%s-%s" % c for c in crates)

    # The deployed set.
    out = deployed(bd)
    assert sorted(os.listdir(out)) == ["README", "SHA256SUMS", "bzImage", "initramfs.cpio.gz", "rootfs.img"]
    subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=out, check=True, capture_output=True)
    rootfs = os.path.join(out, "rootfs.img")
    assert "Compression xz" in superblock(rootfs)
    source = os.path.join(mc_deploy(bd), "vdkr-rootfs-image-qemux86-64.rootfs.squashfs")
    assert "Compression gzip" in superblock(source)
    before, after = listing(source), listing(rootfs)
    for dest, name in INJECTED.items():
        assert after[dest].startswith("-rwxr-xr-x 0/0"), after[dest]
        with open(os.path.join(scripts_dir(tier), name), "rb") as f:
            assert cat(rootfs, dest) == f.read()
    # Everything else as the source has it: owners, setuid, devices...
    assert {k: v for k, v in after.items() if k not in INJECTED} == \
        {k: v for k, v in before.items() if k not in INJECTED}
    assert before["/vxn-init.sh"].startswith("-rwxr-xr-x 1000/1000")
    assert after["/home/user"] == "drwxr-x--- 1000/1000 " + after["/home/user"].split()[2]
    assert after["/usr/bin/su-standin"].startswith("-rwsr-xr-x 0/0")
    assert after["/dev/console"].startswith("crw------- 0/0")
    xattr = subprocess.run(["rdsquashfs", "-x", "/etc/hostname", rootfs], capture_output=True, text=True)
    assert "user.vruntime.origin=standin" in xattr.stdout, xattr
    with open(os.path.join(out, "README"), encoding="utf-8") as f:
        readme = f.read()
    for field in ("Built for: x86_64", "Machine: qemux86-64", "Multiconfig: vruntime-x86-64",
                  "Source runtime: vdkr", "Assembled by: vxn-blobs 0.1.0 (executable sha256 "):
        assert field in readme, field
    with open(os.path.join(mc_deploy(bd), "bzImage"), "rb") as k, open(os.path.join(out, "bzImage"), "rb") as d:
        assert k.read() == d.read()


def test_unchanged_rebuild_runs_nothing(tier, bd):
    bd.write_conf(BASE_CONF + MC_X86)
    before = sha256(os.path.join(deployed(bd), "rootfs.img"))
    r = bd.bitbake(RECIPE)
    record(tier, "nothing changed", r, vxn_tasks(r))
    assert r.ran(RECIPE) == [], r.ran(RECIPE)
    assert not r.warnings(), "\n".join(r.warnings())
    assert sha256(os.path.join(deployed(bd), "rootfs.img")) == before


def test_an_init_script_change_reaches_rootfs_img(tier, bd):
    bd.write_conf(BASE_CONF + MC_X86)
    bd.bitbake(RECIPE)
    edit(os.path.join(scripts_dir(tier), "vxn-init.sh"), "(stand-in 1)", "(stand-in 2)")
    r = bd.bitbake(RECIPE)
    record(tier, "an init script changed", r, vxn_tasks(r))
    assert vxn_tasks(r) == ["do_compile", "do_deploy"]
    assert b"(stand-in 2)" in cat(os.path.join(deployed(bd), "rootfs.img"), "/vxn-init.sh")


def test_knotty_shows_do_compile_progress(tier, bd):
    """On a terminal, knotty draws do_compile's progress bar from the tool's "NN%" lines."""
    bd.write_conf(BASE_CONF + MC_X86)
    edit(os.path.join(scripts_dir(tier), "vxn-init.sh"), "(stand-in 2)", "(stand-in 3)")
    r = bd.bitbake(RECIPE, tty=True)
    bars = [int(b) for b in re.findall(r"vxn-initramfs-create-1.0-r0 do_compile - \d+s \(pid \d+\)\s+(\d+)% \|", r.output)]
    assert bars and max(bars) > 0, "no do_compile progress on knotty's display:\n" + r.output[-2000:]
    assert b"(stand-in 3)" in cat(os.path.join(deployed(bd), "rootfs.img"), "/vxn-init.sh")


def test_a_rootfs_image_change_reruns_compile(tier, bd):
    bd.write_conf(BASE_CONF + MC_X86)
    bd.bitbake(RECIPE)
    recipe = standin(tier, "recipes-containers", "vruntime", "vdkr-rootfs-image.bb")
    edit(recipe, 'STANDIN_SUFFIX = ".rootfs.squashfs"\n', 'STANDIN_SUFFIX = ".rootfs.squashfs"\nSTANDIN_RELEASE = "2"\n')
    r = bd.bitbake(RECIPE)
    record(tier, "the rootfs image recipe changed (new image in the multiconfig)", r, vxn_tasks(r))
    assert r.index("vdkr-rootfs-image", "do_image", mc=MC) < r.index(RECIPE, "do_compile")
    assert vxn_tasks(r) == ["do_compile", "do_deploy"]
    assert b"release 2" in cat(os.path.join(deployed(bd), "rootfs.img"), "/etc/vruntime-release")
    # ${B} survives between builds, so compile reused the previous rootfs.img's xz blocks for
    # what did not change (the image's big payload).
    copied, _, _, _ = block_sources(task_log(bd, "do_compile"))
    assert copied > 0, "no block reuse in log.do_compile"


def test_with_rm_work_a_rootfs_change_takes_the_unchanged_blocks_from_the_block_cache(tier, bd):
    """rm_work removes ${B}, and with it the previous rootfs.img: the block cache in SSTATE_DIR
    (VXN_BLOCK_CACHE's default) still spares every block that did not change."""
    bd.write_conf(BASE_CONF + MC_X86 + 'INHERIT += "rm_work"\n')
    bd.bitbake(RECIPE)
    (workdir,) = glob.glob(bd.path("tmp", "work", "qemux86_64-oe-linux", RECIPE, "*"))
    assert not os.path.exists(os.path.join(workdir, "build")), "rm_work left ${B}"
    recipe = standin(tier, "recipes-containers", "vruntime", "vdkr-rootfs-image.bb")
    edit(recipe, 'STANDIN_RELEASE = "2"\n', 'STANDIN_RELEASE = "3"\n')
    r = bd.bitbake(RECIPE)
    record(tier, "the rootfs image changed, with rm_work (no previous rootfs.img)", r, vxn_tasks(r))
    assert vxn_tasks(r) == ["do_compile", "do_deploy"]
    assert not r.warnings(), "\n".join(r.warnings())
    log = task_log(bd, "do_compile")
    copied, cached, compressed, total = block_sources(log)
    oetier.log("rm_work: %d of %d blocks from the block cache, %d compressed" % (cached, total, compressed))
    # The payload and everything but the fragment holding the changed release file.
    assert copied == 0 and cached >= total - 2 and compressed >= 1, (copied, cached, compressed, total)
    assert os.path.join(bd.sstate, "vxn-blocks") in log
    assert not os.path.exists(os.path.join(workdir, "build")), "rm_work left ${B}"
    assert b"release 3" in cat(os.path.join(deployed(bd), "rootfs.img"), "/etc/vruntime-release")
    assert the_set(bd) == reference_set(tier, bd, "rm-work", inject_from=scripts_dir(tier))


def test_a_vxn_inject_change_reruns_compile(tier, bd):
    for name in ("vxn-extra.sh", "vxn-sbin-extra.sh"):
        with open(os.path.join(scripts_dir(tier), name), "w") as f:
            f.write("#!/bin/sh\necho extra\n")
    tier._give_to_user(scripts_dir(tier))
    # The stand-in rootfs is usrmerged (/sbin -> usr/sbin): /sbin/vxn-extra lands in /usr/sbin,
    # as the seed's install into the unpacked tree would put it.
    bd.write_conf(BASE_CONF + MC_X86 +
                  'VXN_INJECT:append = " vxn-extra.sh:/etc/vxn-extra.sh:0700 vxn-sbin-extra.sh:/sbin/vxn-extra:0755"\n')
    r = bd.bitbake(RECIPE)
    record(tier, "VXN_INJECT changed", r, vxn_tasks(r))
    assert vxn_tasks(r) == ["do_compile", "do_deploy"]
    rootfs = os.path.join(deployed(bd), "rootfs.img")
    after = listing(rootfs)
    assert after["/etc/vxn-extra.sh"].startswith("-rwx------ 0/0")
    assert after["/sbin"].startswith("lrwxrwxrwx 0/0"), after["/sbin"]
    assert after["/usr/sbin/vxn-extra"].startswith("-rwxr-xr-x 0/0"), after["/usr/sbin/vxn-extra"]
    assert cat(rootfs, "/usr/sbin/vxn-extra") == b"#!/bin/sh\necho extra\n"
    assert "/sbin/vxn-extra goes to /usr/sbin/vxn-extra" in task_log(bd, "do_compile")


def task_log(bd, task, recipe=RECIPE):
    """The last log of `task`; meta-vxn's recipes are MACHINE_ARCH (qemux86-64 here)."""
    (path,) = glob.glob(bd.path("tmp", "work", "qemux86_64-oe-linux", recipe, "*", "temp", "log." + task))
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def reference_set(tier, bd, name, inject_from=None):
    """What a clean build deploys for the spec do_compile last used: the same native tool run
    cold (an empty build_dir, no block cache: nothing to reuse) on a copy of that spec. With
    `inject_from`, the files to inject are taken from there by name (rm_work removed ${S})."""
    (spec_path,) = glob.glob(bd.path("tmp", "work", "qemux86_64-oe-linux", RECIPE, "*", "temp",
                                     "vxn-blobs-spec.json"))
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    scratch = bd.path("reference-" + name)
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    spec["build_dir"] = os.path.join(scratch, "build")
    spec["deploy_dir"] = os.path.join(scratch, "deploy")
    spec.pop("block_cache", None)
    if inject_from:
        for entry in spec["inject"]:
            entry["source"] = os.path.join(inject_from, os.path.basename(entry["source"]))
    path = os.path.join(scratch, "spec.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    tier._give_to_user(scratch)
    tool = bd.path("tmp", "sysroots-components", "x86_64", "vxn-blobs-native", "usr", "bin", "vxn-blobs")
    for command in ("compile", "deploy"):
        r = tier.run_as_user([tool, command, "--spec", path])
        assert r.returncode == 0, r.stderr
    out = os.path.join(spec["deploy_dir"], "vxn", spec["blob_arch"])
    return {n: sha256(os.path.join(out, n)) for n in sorted(os.listdir(out))}


def block_sources(log):
    """(copied, from the block cache, compressed, in all) from do_compile's log: the engine's line
    "copied C of T blocks from ..., took N from the block cache ..., compressed M"."""
    m = re.search(r"copied (\d+) of (\d+) blocks from \S+, took (\d+) from the block cache \S+, compressed (\d+)", log)
    assert m, "no line on where the rootfs blocks came from in log.do_compile"
    copied, total, cached, compressed = (int(g) for g in m.groups())
    assert copied + cached + compressed == total, m.group(0)
    return copied, cached, compressed, total


def the_set(bd):
    out = deployed(bd)
    return {n: sha256(os.path.join(out, n)) for n in sorted(os.listdir(out))}


def sstate_objects(tier, bd, task):
    """Paths of the recipe's sstate archives for `task`."""
    found = []
    for root, _, files in os.walk(os.path.join(tier.work, "sstate-" + bd.series.name)):
        found += [os.path.join(root, f) for f in files
                  if f.startswith("sstate:%s:" % RECIPE) and "_%s.tar" % task in f and not f.endswith(".siginfo")]
    return found


def test_force_build_reruns_both_tasks_reuses_and_makes_no_sstate(tier, bd):
    for old in sstate_objects(tier, bd, "deploy"):
        os.unlink(old)
    bd.write_conf(BASE_CONF + MC_X86 + 'VXN_FORCE_BUILD = "1"\n')
    bd.bitbake(RECIPE)
    for attempt in (1, 2):
        r = bd.bitbake(RECIPE)
        record(tier, "nothing changed, VXN_FORCE_BUILD = \"1\" (run %d)" % attempt, r, vxn_tasks(r))
        assert vxn_tasks(r) == ["do_compile", "do_deploy"]
        assert "reusing the outputs" in task_log(bd, "do_compile")
    assert sstate_objects(tier, bd, "deploy") == []


def test_a_fresh_tmpdir_restores_the_deploy_from_sstate(tier, bd):
    bd.write_conf(BASE_CONF + MC_X86)
    bd.bitbake(RECIPE)
    # Not forced, do_deploy makes an sstate object (forced, it must not: see above).
    assert sstate_objects(tier, bd, "deploy"), "no sstate object for do_deploy"
    before = {n: sha256(os.path.join(deployed(bd), n)) for n in os.listdir(deployed(bd))}
    for tmp in ("tmp", "tmp-" + MC):
        shutil.rmtree(bd.path(tmp))
    r = bd.bitbake(RECIPE)
    record(tier, "fresh TMPDIR, sstate kept", r, vxn_tasks(r))
    assert vxn_tasks(r) == ["do_deploy_setscene"]
    assert {n: sha256(os.path.join(deployed(bd), n)) for n in os.listdir(deployed(bd))} == before


def test_inputs_given_by_path_are_in_the_signature_by_content(tier, bd):
    """Without the multiconfig no mcdepends carry the images: [file-checksums] must."""
    bd.write_conf(BASE_CONF + MC_X86)
    bd.bitbake(RECIPE)
    by_hand = bd.path("inputs-by-hand")
    os.makedirs(by_hand, exist_ok=True)
    for name in os.listdir(mc_deploy(bd)):
        if name.startswith(("vdkr-", "bzImage")):
            shutil.copy(os.path.join(mc_deploy(bd), name), by_hand)  # links resolved
    tier._give_to_user(by_hand)
    conf = BASE_CONF + 'VXN_MC_DEPLOY_DIR = "${TOPDIR}/inputs-by-hand"\n'
    bd.write_conf(conf)
    first = bd.bitbake(RECIPE)
    assert vxn_tasks(first) == ["do_compile", "do_deploy"]  # other inputs' paths, so a new signature
    again = bd.bitbake(RECIPE)
    record(tier, "inputs by path, no multiconfig: nothing changed", again, vxn_tasks(again))
    assert vxn_tasks(again) == []

    # A new rootfs (here: the deployed one, a valid squashfs with other bytes) dropped in by hand.
    rootfs = os.path.join(by_hand, "vdkr-rootfs-image-qemux86-64.rootfs.squashfs")
    shutil.copy(os.path.join(deployed(bd), "rootfs.img"), rootfs)
    tier._give_to_user(by_hand)
    r = bd.bitbake(RECIPE)
    record(tier, "inputs by path, no multiconfig: the rootfs file replaced", r, vxn_tasks(r))
    assert vxn_tasks(r) == ["do_compile", "do_deploy"]
    assert "Compression xz" in superblock(os.path.join(deployed(bd), "rootfs.img"))

    # A changed kernel: same header, other bytes.
    kernel = os.path.join(by_hand, "bzImage")
    with open(kernel, "r+b") as f:
        f.seek(0x1000)
        f.write(b"another build")
    r = bd.bitbake(RECIPE)
    record(tier, "inputs by path, no multiconfig: the kernel file changed", r, vxn_tasks(r))
    assert vxn_tasks(r) == ["do_compile", "do_deploy"]
    assert sha256(os.path.join(deployed(bd), "bzImage")) == sha256(kernel)


def test_without_the_distro_features_meta_vxn_steps_aside(tier, bd):
    """Inert unless the distro asks for it: without "virtualization" meta-vxn's recipe is
    skipped, and BitBake takes meta-virtualization's own (priority 8) as if meta-vxn were not
    there; the Dom0 package, which only meta-vxn has, is refused with the feature to add."""
    bd.write_conf(MC_X86)
    r = bd.bitbake("-r", RECIPE, "FILE", tool="bitbake-getvar")
    assert standin(tier, "recipes-core", "vxn") in r.output, r.output
    bd.write_conf(BASE_CONF + MC_X86)
    r = bd.bitbake("-r", RECIPE, "FILE", tool="bitbake-getvar")
    assert oetier.meta_vxn(tier) in r.output, r.output
    r = bd.bitbake("vxn-dom0-blobs", check=False)
    assert r.returncode != 0
    assert "missing required DISTRO_FEATURES: 'xen'" in r.output, r.output[-2000:]


def test_the_dom0_package_holds_the_blobs_under_usr_share_vxn(tier, bd):
    """vxn-dom0-blobs packages what vxn-initramfs-create deployed: one task of the build reads
    the rootfs image (`bitbake -g`), and the package holds the deployed bytes."""
    bd.write_conf(BASE_CONF + MC_X86 + 'DISTRO_FEATURES:append = " xen"\n')
    bd.bitbake("-g", RECIPE, "vxn-dom0-blobs")
    edges = reallayers.parse_dot(bd.path("task-depends.dot"))
    default = [t for t in edges if not t.startswith("mc:")]
    readers = sorted(t for t in default if "mc:%s:vdkr-rootfs-image.do_image_complete" % MC in edges[t])
    assert readers == ["vxn-initramfs-create.do_compile"], readers
    assert "vxn-initramfs-create.do_deploy" in edges["vxn-dom0-blobs.do_compile"], sorted(edges["vxn-dom0-blobs.do_compile"])
    assert not [t for t in edges if t.startswith("vxn-dom0-blobs.") and t.split(".")[1] in ("do_deploy", "do_populate_sysroot")]

    bd.bitbake("-c", "cleansstate", "vxn-dom0-blobs")
    r = bd.bitbake(RECIPE, "vxn-dom0-blobs")
    assert not r.warnings(), "\n".join(r.warnings())
    ran = r.ran("vxn-dom0-blobs")
    for task in ("do_compile", "do_install", "do_package", "do_packagedata", "do_package_qa", "do_package_write_deb"):
        assert task in ran, task
    assert "do_deploy" not in ran, "vxn-initramfs-create deploys the blobs; the package recipe must not"
    # Staged from the deploy, not compiled: ${B} holds links to the deployed files.
    work = bd.path("tmp", "work", "qemux86_64-oe-linux", "vxn-dom0-blobs", "1.0")
    with open(os.path.join(work, "temp", "run.do_compile"), encoding="utf-8") as f:
        assert "vxn-blobs compile" not in f.read()
    out = deployed(bd)
    assert os.stat(os.path.join(work, "build", "rootfs.img")).st_ino == os.stat(os.path.join(out, "rootfs.img")).st_ino

    with open(bd.path("tmp", "pkgdata", "qemux86-64", "runtime", "vxn-dom0-blobs"), encoding="utf-8") as f:
        files = json.loads(re.search(r"^FILES_INFO:vxn-dom0-blobs: (.*)$", f.read(), re.M).group(1))
    prefix = "/usr/share/vxn/x86_64/"
    assert sorted(files) == [prefix + n for n in ("SHA256SUMS", "bzImage", "initramfs.cpio.gz", "rootfs.img")]
    (deb,) = glob.glob(bd.path("tmp", "deploy", "deb", "qemux86_64", "vxn-dom0-blobs_*.deb"))
    listing_ = subprocess.run(["dpkg-deb", "-c", deb], check=True, capture_output=True, text=True).stdout
    for name in files:
        line = [l for l in listing_.splitlines() if l.endswith("." + name)]
        assert line and line[0].startswith("-rw-r--r-- root/root"), (name, listing_)
    # The deployed bytes, and the deploy's SHA256SUMS lines for them.
    unpacked = bd.path("dom0-deb")
    shutil.rmtree(unpacked, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", deb, unpacked], check=True)
    for name in ("bzImage", "initramfs.cpio.gz", "rootfs.img"):
        assert sha256(unpacked + prefix + name) == sha256(os.path.join(out, name)), name
    with open(os.path.join(out, "SHA256SUMS"), encoding="utf-8") as f:
        expected = "".join(l for l in f if not l.rstrip("\n").endswith("  README"))
    with open(unpacked + prefix + "SHA256SUMS", encoding="utf-8") as f:
        assert f.read() == expected


def test_aarch64_machine_gives_vxn_aarch64_with_image(tier, bd):
    bd.write_conf(BASE_CONF + 'MACHINE = "qemuarm64"\nBBMULTICONFIG = "vruntime-aarch64"\n')
    r = bd.bitbake(RECIPE)
    record(tier, "MACHINE = \"qemuarm64\", first build", r, vxn_tasks(r))
    assert r.index("vdkr-rootfs-image", "do_image_complete", mc="vruntime-aarch64") < r.index(RECIPE, "do_compile")
    out = deployed(bd, "aarch64", "qemuarm64")
    assert sorted(os.listdir(out)) == ["Image", "README", "SHA256SUMS", "initramfs.cpio.gz", "rootfs.img"]
    with open(os.path.join(out, "Image"), "rb") as f:
        assert f.read()[0x38:0x3c] == b"ARM\x64"
    with open(os.path.join(out, "README"), encoding="utf-8") as f:
        readme = f.read()
    assert "Built for: aarch64" in readme and "Multiconfig: vruntime-aarch64" in readme
    subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=out, check=True, capture_output=True)


def test_devtool_modify_builds_the_tool_from_a_checkout(tier, bd):
    bd.write_conf(BASE_CONF + MC_X86)
    bd.bitbake(RECIPE)
    readme = os.path.join(deployed(bd), "README")

    def identity():
        with open(readme, encoding="utf-8") as f:
            return re.search(r"^Assembled by: (.*)$", f.read(), re.M).group(1)

    before = identity()
    srctree = tier.checkout
    bd.bitbake("modify", "-n", "vxn-blobs-native", srctree, tool="devtool")
    main_rs = os.path.join(srctree, "src", "main.rs")
    with open(main_rs, encoding="utf-8") as f:
        original = f.read()
    edit(main_rs, '"{command}: installed into {}"', '"{command} (devtool): installed into {}"')
    try:
        r = bd.bitbake(RECIPE)
        record(tier, "devtool modify -n vxn-blobs-native, src/ changed", r, vxn_tasks(r))
        assert "do_compile" in r.ran("vxn-blobs-native")
        assert vxn_tasks(r) == ["do_compile", "do_deploy"]
        assert "deploy (devtool): installed into" in task_log(bd, "do_deploy")
        changed = identity()
        assert changed != before, "the rebuilt tool does not show in the README"
    finally:
        with open(main_rs, "w", encoding="utf-8") as f:
            f.write(original)
        bd.bitbake("reset", "vxn-blobs-native", tool="devtool")
    r = bd.bitbake(RECIPE)
    record(tier, "devtool reset vxn-blobs-native", r, vxn_tasks(r))
    assert identity() == before
