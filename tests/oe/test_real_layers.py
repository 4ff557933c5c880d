"""meta-vxn beside the real meta-virtualization (wrynose): what a Dom0 user's build does.

Three TOPDIRs on the real layers (OE-core, meta-oe, meta-python, meta-networking,
meta-filesystems, meta-poky, meta-virtualization, meta-vxn):
- build-real-wrynose: their recipes masked but for the ones these builds need (as the stand-in
  builds), no multiconfig, the inputs given by path (vxn-blobs demo's stand-in images): the
  real vxn-init.sh and vcontainer-init-common.sh injected and deployed, and meta-virtualization's
  vxn, bbappended, built through do_package_write_deb; and the signature test.
- check-real-wrynose: the whole stack with meta-vxn and the Dom0 configuration
  (reallayers.DOM0_CONF), parsed in the background from the tier's start
  (reallayers.start_parse), after which `bitbake -p`, bitbake-layers and `bitbake -g` run on
  its cache.
- check-layer-real-wrynose: yocto-check-layer on meta-vxn in the default configuration
  (reallayers.CHECK_LAYER_CONF), started in the background from the tier's start; scripts/test.sh
  starts it before its first tier instead, as a run of its own.
"""

import glob
import hashlib
import os
import re
import subprocess

import pytest

import oetier
import reallayers

MC = reallayers.MC
SCRIPTS = os.path.join("recipes-containers", "vcontainer", "files")
# meta-vxn's names: its layer directory, its recipes and the recipe it bbappends.
OURS = re.compile(r"meta-vxn|vxn-blobs|vxn-initramfs-create|vxn-dom0-blobs|\bvxn\b")


def ours(tier, warnings):
    """The warnings that name meta-vxn or its recipes (the work directory's own name, which
    may hold "vxn", left out)."""
    return [w for w in warnings if OURS.search(w.replace(tier.work, "<work>"))]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read(path):
    with open(path, "rb") as f:
        return f.read()


# -- build-real-wrynose: what can run offline, for real ---------------------------------------

@pytest.fixture(scope="module")
def offline(tier, stack):
    """build-real-wrynose (reallayers.offline_dir)."""
    return reallayers.offline_dir(tier, stack)


def deployed(bd):
    return bd.path("tmp", "deploy", "images", "qemux86-64", "vxn", "x86_64")


def unsquashfs_cat(image, path):
    return subprocess.run(["unsquashfs", "-cat", image, path], check=True, capture_output=True).stdout


# What vxn_1.0.bb's do_install installs and which package holds it (FILES:*), at the snapshot's
# commit: a change upstream shows here first.
UPSTREAM_FILES = {
    "vxn": ["/usr/bin/vxn", "/usr/bin/vxn-oci-runtime", "/usr/bin/vxn-sendtty",
            "/usr/bin/containerd-shim-vxn-v2", "/usr/bin/vctr", "/usr/libexec/vxn/shim/runc",
            "/etc/containerd/config.toml", "/usr/lib/vxn/vrunner.sh",
            "/usr/lib/vxn/vrunner-backend-xen.sh", "/usr/lib/vxn/vrunner-backend-qemu.sh",
            "/usr/lib/vxn/vcontainer-common.sh"],
    "vxn-vdkr": ["/usr/bin/vdkr"],
    "vxn-vpdmn": ["/usr/bin/vpdmn"],
    "vxn-docker-config": ["/etc/docker/daemon.json"],
    "vxn-podman-config": ["/etc/containers/containers.conf.d/50-vxn-runtime.conf"],
}
# Installed from meta-virtualization's files as they are.
FROM_SOURCES = {"/usr/bin/vxn": "vxn.sh", "/usr/bin/vxn-oci-runtime": "vxn-oci-runtime",
                "/usr/bin/containerd-shim-vxn-v2": "containerd-shim-vxn-v2", "/usr/bin/vctr": "vctr",
                "/etc/containerd/config.toml": "containerd-config-vxn.toml",
                "/usr/lib/vxn/vrunner.sh": "vrunner.sh", "/usr/lib/vxn/vcontainer-common.sh": "vcontainer-common.sh",
                "/usr/bin/vdkr": "vdkr.sh", "/usr/bin/vpdmn": "vpdmn.sh"}
BLOBS = ["/usr/share/vxn/x86_64/" + n for n in ("SHA256SUMS", "bzImage", "initramfs.cpio.gz", "rootfs.img")]


def deb_files(deb):
    """The regular files and symlinks of a .deb, by path."""
    listing = subprocess.run(["dpkg-deb", "-c", deb], check=True, capture_output=True, text=True).stdout
    files = {}
    for line in listing.splitlines():
        fields = line.split(None, 5)
        if fields[0][0] in "-l":
            files[fields[5].split(" -> ")[0].lstrip(".")] = line
    return files


def test_offline_the_real_scripts_are_injected_and_vxn_packages_the_deployed_blobs(tier, stack, offline):
    bd = offline
    bd.bitbake("vxn-blobs-native")
    tool = reallayers.make_demo_inputs(tier, bd)

    r = bd.bitbake("vxn")
    assert not ours(tier, r.warnings()), "\n".join(r.warnings())
    ran_vic, ran_vxn = r.ran("vxn-initramfs-create"), r.ran("vxn")
    for task in ("do_compile", "do_deploy"):
        assert task in ran_vic, ran_vic
    for task in ("do_compile", "do_install", "do_package", "do_package_qa", "do_package_write_deb"):
        assert task in ran_vxn, ran_vxn
    # One assembly: vxn's do_compile comes after the deploy and runs no squashfs tool.
    assert r.index("vxn-initramfs-create", "do_deploy") < r.index("vxn", "do_compile")
    assert "squashfs-tools-native" not in {t.recipe for t in r.tasks()}
    (workdir,) = glob.glob(bd.path("tmp", "work", "qemux86_64-oe-linux", "vxn", "*"))
    with open(os.path.join(workdir, "temp", "run.do_compile"), encoding="utf-8") as f:
        compile_script = f.read()
    assert "unsquashfs" not in compile_script and "mksquashfs" not in compile_script
    assert re.search(r"^\s*gcc .*/vxn-sendtty\.c .*-o \S+/vxn-sendtty$", compile_script, re.M), "not the host's gcc"

    # The real init scripts, injected and deployed.
    out = deployed(bd)
    rootfs = os.path.join(out, "rootfs.img")
    files = os.path.join(stack.meta_virt, SCRIPTS)
    for name in ("vxn-init.sh", "vcontainer-init-common.sh"):
        assert unsquashfs_cat(rootfs, "/" + name) == read(os.path.join(files, name)), name
    subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=out, check=True, capture_output=True)

    # The packages: upstream's files where upstream puts them, plus the blobs and SHA256SUMS.
    debs = bd.path("tmp", "deploy", "deb", "qemux86_64")
    for pkg, expected in UPSTREAM_FILES.items():
        (deb,) = glob.glob(os.path.join(debs, "%s_*.deb" % pkg))
        got = deb_files(deb)
        assert sorted(got) == sorted(expected + (BLOBS if pkg == "vxn" else [])), (pkg, sorted(got))
    unpacked = bd.path("vxn-debs")
    subprocess.run(["rm", "-rf", unpacked], check=True)
    for pkg in UPSTREAM_FILES:
        (pkg_deb,) = glob.glob(os.path.join(debs, "%s_*.deb" % pkg))
        subprocess.run(["dpkg-deb", "-x", pkg_deb, unpacked], check=True)
    for path, source in FROM_SOURCES.items():
        assert read(unpacked + path) == read(os.path.join(files, source)), path
    assert os.readlink(unpacked + "/usr/libexec/vxn/shim/runc") == "/usr/bin/vxn-oci-runtime"
    assert read(unpacked + "/usr/bin/vxn-sendtty")[:4] == b"\x7fELF"
    blobs = unpacked + "/usr/share/vxn/x86_64"
    assert sha256(os.path.join(blobs, "rootfs.img")) == sha256(rootfs), "not the deployed rootfs.img"
    subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=blobs, check=True, capture_output=True)
    check = subprocess.run([tool, "check", blobs], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    (deb,) = glob.glob(os.path.join(debs, "vxn_*.deb"))
    control = subprocess.run(["dpkg-deb", "-f", deb], check=True, capture_output=True, text=True).stdout
    for field in ("Provides", "Replaces", "Conflicts"):
        assert re.search(r"^%s: .*\bvxn-dom0-blobs\b" % field, control, re.M), control
    depends = re.search(r"^Depends: (.*)$", control, re.M).group(1)
    for name in ("xen-tools-xl", "bash", "skopeo"):
        assert name in depends, depends
    # With meta-virtualization, an image asking for vxn-dom0-blobs gets vxn.
    assert os.path.exists(bd.path("tmp", "pkgdata", "qemux86-64", "runtime-rprovides", "vxn-dom0-blobs", "vxn"))
    r = bd.bitbake("vxn-dom0-blobs", check=False)
    assert r.returncode != 0 and "RPROVIDES vxn-dom0-blobs: install vxn" in r.output, r.output[-2000:]


# -- check-real-wrynose: the whole stack, parsed in the background ---------------------------------

@pytest.fixture(scope="module")
def real_parse(tier, stack):
    """What the parses of check-real-wrynose printed (reallayers.start_parse), once they ended."""
    running = tier.check_layer_runs.get("real-parse") or reallayers.start_parse(tier, stack)
    return running.wait()


@pytest.fixture(scope="module")
def real(tier, stack, real_parse):
    """check-real-wrynose: the whole stack with meta-vxn, its parse cache made."""
    return reallayers.check_dir(tier, stack)


def test_yocto_check_layer_passes_beside_the_real_layers(tier, stack):
    """Every test, test_signatures included, beside the real layers in the default configuration
    (reallayers.CHECK_LAYER_CONF says why that one)."""
    running = tier.check_layer_runs.get("real") or reallayers.start_check_layer(tier, stack)
    r = running.wait(check=False)
    # Each test's line, then its result's, with whatever the test printed between them (test_security
    # runs git, which says the tier's copy of meta-vxn is not a repository).
    results = re.findall(r"^INFO: (test_\w+) \(([\w.]+)\)\s*$(?:\n(?!INFO: ).*$)*\n^INFO: .*?\.\.\. (ok|FAIL|ERROR|skipped.*)$",
                         r.output, re.M)
    oetier.log("real layers: yocto-check-layer ran %s" % ", ".join("%s %s" % (t, res) for t, _, res in results))
    for command, parsing, seconds in reallayers.server_commands(running.bd.path("bitbake-cookerdaemon.log")):
        oetier.log("real layers: yocto-check-layer's %s: %.0f s, of which %.0f s parsing" % (command, seconds, parsing))
    assert r.returncode == 0, r.output[-4000:]
    assert "INFO: meta-vxn" in r.output and "PASS" in r.output.split("Summary of results:")[-1], r.output[-2000:]
    tests = {t: res for t, _, res in results}
    assert {"test_parse", "test_show_environment", "test_world", "test_world_inherit_class", "test_readme",
            "test_security", "test_layerseries_compat", "test_patches_upstream_status", "test_signatures"} <= set(tests), tests
    assert all(res == "ok" for res in tests.values()), tests


def test_the_real_stack_parses_with_no_warning_from_meta_vxn(tier, real, real_parse):
    """On the first of the background parses, the one that parsed every recipe (a parse from
    the cache prints no recipe's warnings), then on a command after them, which finds the
    cache."""
    r = real_parse
    m = re.search(r"Parsing of (\d+) \.bb files complete \((\d+) cached, (\d+) parsed\)\. (\d+) targets, "
                  r"(\d+) skipped, (\d+) masked, (\d+) errors", r.output)
    assert m, r.output[-2000:]
    recipes, cached, parsed, targets, skipped, masked, errors = (int(g) for g in m.groups())
    oetier.log("real layers: %d recipes (%d cached, %d parsed), %d targets, %d skipped"
               % (recipes, cached, parsed, targets, skipped))
    assert errors == 0 and recipes > 4000, m.group(0)
    assert parsed == recipes, ("the first parse must parse every recipe, or their warnings are not "
                               "seen: %s (a TOPDIR kept by VXN_OE_KEEP=1 has a cache)" % m.group(0))
    assert not r.lines("ERROR:"), "\n".join(r.lines("ERROR:"))
    assert not ours(tier, r.warnings()), "\n".join(ours(tier, r.warnings()))
    for w in r.warnings():
        oetier.log("real layers: a warning not from meta-vxn: %s" % w)
    again = real.bitbake("-p")
    m = re.search(r"Parsing of (\d+) \.bb files complete \((\d+) cached, (\d+) parsed\)", again.output)
    assert m and int(m.group(1)) == recipes, again.output[-2000:]
    oetier.log("real layers: bitbake -p after the background parses: %s" % m.group(0))
    assert not again.lines("ERROR:") and not ours(tier, again.warnings()), again.output[-2000:]


def test_the_knobs_show_where_users_look_them_up(real):
    """On wrynose, here only: OE-core alone is not parsed in full for it (test_parse.py)."""
    oetier.assert_knobs_shown(real)


def test_show_appends_and_show_overlayed_are_what_the_docs_say(tier, real):
    dynamic = os.path.join(oetier.meta_vxn(tier), "dynamic-layers", "virtualization-layer", "recipes-core", "vxn")
    r = real.bitbake("show-appends", tool="bitbake-layers")
    appends = {}
    recipe = None
    for line in r.output.splitlines():
        if re.match(r"^\S+\.bb( \(skipped\))?:$", line):
            recipe = line.split(":")[0].split(" ")[0]
        elif line.startswith("  ") and recipe:
            appends.setdefault(line.strip(), recipe)
    ours = {path: recipe for path, recipe in appends.items() if oetier.meta_vxn(tier) in path}
    assert ours == {os.path.join(dynamic, "vxn_%.bbappend"): "vxn_1.0.bb",
                    os.path.join(dynamic, "vxn-dom0-blobs_%.bbappend"): "vxn-dom0-blobs_1.0.bb"}, r.output
    r = real.bitbake("show-overlayed", tool="bitbake-layers")
    overlayed = re.findall(r"^(\S+):\n((?:  .*\n)+)", r.output + "\n", re.M)
    # Layers by directory name, the winner first.
    ours = {pn: [l.split()[0] for l in lines.splitlines()] for pn, lines in overlayed
            if re.search(r"^  meta-vxn\s", lines, re.M)}
    assert ours == {"vxn-initramfs-create": ["meta-vxn", "meta-virtualization"]}, r.output


def graph(real, target):
    r = real.bitbake("-g", target)
    edges = reallayers.parse_dot(real.path("task-depends.dot"))
    oetier.log("real layers: bitbake -g %s: %d tasks" % (target, len(edges)))
    return edges


def test_task_graphs_resolve_with_one_assembly(real):
    images = {"mc:%s:vdkr-rootfs-image.do_image_complete" % MC,
              "mc:%s:vdkr-tiny-initramfs-image.do_image_complete" % MC}
    for target in ("vxn-initramfs-create", "vxn"):
        edges = graph(real, target)
        compile_deps = edges["vxn-initramfs-create.do_compile"]
        assert images <= compile_deps, sorted(compile_deps)
        assert any(re.match(r"mc:%s:linux-\S*\.do_deploy$" % MC, t) for t in compile_deps), sorted(compile_deps)
        assert "vxn-blobs-native.do_populate_sysroot" in edges
        default = [t for t in edges if not t.startswith("mc:")]
        assert not [t for t in default if t.startswith("squashfs-tools-native.")], target
        # The assembly of rootfs.img: the one task of this configuration that reads the image.
        readers = sorted(t for t in default if "mc:%s:vdkr-rootfs-image.do_image_complete" % MC in edges[t])
        assert readers == ["vxn-initramfs-create.do_compile"], readers
        assert not [t for t in edges if t.startswith("vxn-dom0-blobs.")]
    assert "vxn-initramfs-create.do_deploy" in edges["vxn.do_compile"]
    for task in ("do_compile", "do_install", "do_package_write_deb"):
        assert "vxn.%s" % task in edges


def test_a_vxn_init_sh_edit_changes_the_assembly_and_the_package(offline, stack):
    """In build-real-wrynose, whose masked parse is cheap: on the whole stack, `bitbake -S`
    parsed all of it again (a second full parse), and the signatures asked about are the same
    there, the images being out of this question."""
    def sigs():
        offline.bitbake("-S", "lockedsigs", "vxn")
        return reallayers.locked_sigs(offline.path("locked-sigs.inc"))

    script = os.path.join(stack.meta_virt, SCRIPTS, "vxn-init.sh")
    before = sigs()
    original = read(script)
    try:
        with open(script, "ab") as f:
            f.write(b"# an edit (tests/oe)\n")
        after = sigs()
    finally:
        with open(script, "wb") as f:
            f.write(original)
    for task in ("vxn-initramfs-create:do_compile", "vxn-initramfs-create:do_deploy", "vxn:do_compile",
                 "vxn:do_install", "vxn:do_package_write_deb"):
        assert before[task] != after[task], task
    assert before["vxn-blobs-native:do_populate_sysroot"] == after["vxn-blobs-native:do_populate_sysroot"]
