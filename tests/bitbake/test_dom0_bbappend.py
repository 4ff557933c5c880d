"""meta-vxn's dynamic layer for meta-virtualization, parsed by the real BitBake on upstream's own
vxn_1.0.bb, taken from the meta-virtualization snapshot when the test runs.

What they guard: BBFILES_DYNAMIC applies the bbappends exactly when meta-virtualization's
collection is there; the bbappend changes what docs/integration.md says it changes in vxn (the
repack's dependencies and tasks, the package arch, the vxn-dom0-blobs transition) and nothing
else; it refuses an upstream recipe it no longer matches, naming what moved; vxn-dom0-blobs
steps aside. The snapshot comes from VXN_META_VIRT (a checkout or tarball) or VXN_OE_SNAPSHOTS
(meta-virtualization-*.tar.gz); without one these skip, and fail under CI=true.
"""

import glob
import os
import tarfile

import pytest

from bbharness import LAYER, Build, make_meta_virt, missing, recipe_path

UPSTREAM = "recipes-core/vxn/vxn_1.0.bb"
DYNAMIC = os.path.join(LAYER, "dynamic-layers", "virtualization-layer", "recipes-core", "vxn")
VXN_APPEND = os.path.join(DYNAMIC, "vxn_%.bbappend")
DOM0_APPEND = os.path.join(DYNAMIC, "vxn-dom0-blobs_%.bbappend")
LOCAL = {"DISTRO_FEATURES": "virtualization xen", "BBMULTICONFIG": "vruntime-x86-64"}


def upstream_recipe():
    """vxn_1.0.bb's text from meta-virtualization (a checkout, or a snapshot tarball)."""
    source = os.environ.get("VXN_META_VIRT")
    if not source and os.environ.get("VXN_OE_SNAPSHOTS"):
        found = sorted(glob.glob(os.path.join(os.environ["VXN_OE_SNAPSHOTS"], "meta-virtualization-*.tar*")))
        source = found[-1] if found else None
    if not source:
        missing("meta-virtualization's vxn_1.0.bb is needed: set VXN_META_VIRT to a checkout or "
                "snapshot tarball, or VXN_OE_SNAPSHOTS to a directory with meta-virtualization-*.tar.gz")
    if os.path.isdir(source):
        for candidate in (os.path.join(source, UPSTREAM), os.path.join(source, "meta-virtualization", UPSTREAM)):
            if os.path.isfile(candidate):
                with open(candidate, encoding="utf-8") as f:
                    return f.read()
        missing("%s has no %s" % (source, UPSTREAM))
    with tarfile.open(source) as t:
        for member in t.getmembers():
            if member.name.endswith("/" + UPSTREAM) or member.name == UPSTREAM:
                return t.extractfile(member).read().decode("utf-8")
    missing("%s has no %s" % (source, UPSTREAM))


@pytest.fixture(scope="module")
def upstream():
    return upstream_recipe()


def parse_vxn(bblib, tmp_path, text, appends=((VXN_APPEND,),)):
    """Upstream's recipe (or an edited copy) in a stand-in meta-virtualization, parsed once with
    each list of bbappends in `appends`: a datastore each, or the one when a single list."""
    layer = make_meta_virt(tmp_path)
    recipe = os.path.join(layer, UPSTREAM)
    os.makedirs(os.path.dirname(recipe), exist_ok=True)
    with open(recipe, "w", encoding="utf-8") as f:
        f.write(text)
    build = Build(bblib, tmp_path / "build", local=LOCAL, layers=[layer], multiconfigs=("vruntime-x86-64",))
    parsed = [build.parse(recipe, a)[""] for a in appends]
    return parsed[0] if len(parsed) == 1 else parsed


def test_bbfiles_dynamic_applies_only_beside_meta_virtualization(bblib, tmp_path):
    without = Build(bblib, tmp_path / "a").parse_config().data.getVar("BBFILES").split()
    beside = Build(bblib, tmp_path / "b", layers=[make_meta_virt(tmp_path)]).parse_config().data.getVar("BBFILES").split()
    dynamic = [os.path.join(LAYER, "dynamic-layers", "virtualization-layer", "*", "*", "*.bbappend"),
               os.path.join(LAYER, "dynamic-layers", "virtualization-layer", "*", "*", "*.bb")]
    assert not [p for p in without if "dynamic-layers" in p], without
    assert sorted(p for p in beside if "dynamic-layers" in p) == sorted(dynamic), beside


def test_the_bbappend_changes_the_blobs_and_nothing_else_of_upstreams_vxn(bblib, tmp_path, upstream):
    plain, d = parse_vxn(bblib, tmp_path, upstream, appends=((), (VXN_APPEND,)))
    assert not d.getVar("__SKIPPED"), d.getVar("__SKIPPED")

    # Upstream's own repack, as the snapshot has it, and what replaces it.
    assert "squashfs-tools-native" in plain.getVar("DEPENDS").split()
    assert "vruntime-rootfs" not in (plain.getVarFlag("do_compile", "mcdepends") or "vruntime-rootfs")
    assert "mksquashfs" in plain.getVar("do_compile", False)
    assert "squashfs-tools-native" not in d.getVar("DEPENDS").split()
    assert "vxn-blobs-native" in d.getVar("DEPENDS").split()
    assert d.getVarFlag("do_compile", "mcdepends") is None
    assert "vxn-initramfs-create:do_deploy" in d.getVarFlag("do_compile", "depends").split()
    body = d.getVar("do_compile", False)
    assert "unsquashfs" not in body and "mksquashfs" not in body
    assert "${CC} ${CFLAGS} ${S}/vxn-sendtty.c ${LDFLAGS} -o ${B}/vxn-sendtty" in body
    assert body.rstrip().endswith("vxn_stage_deployed_blobs ${KERNEL_IMAGETYPE_VXN}")
    # Upstream's do_install runs as it is, the seal after it.
    install = d.getVar("do_install", False)
    assert install.startswith(plain.getVar("do_install", False).rstrip()) or plain.getVar("do_install", False).strip() in install
    assert install.rstrip().endswith("vxn_seal_installed_blobs ${D}${datadir}/vxn/${BLOB_ARCH}")
    assert d.getVar("PACKAGE_ARCH") == d.getVar("MACHINE_ARCH")
    for var in ("RPROVIDES", "RREPLACES", "RCONFLICTS"):
        assert "vxn-dom0-blobs" in d.getVar("%s:vxn" % var).split(), var
    assert d.getVar("VXN_DEPLOYED_BLOBS") == d.expand("${DEPLOY_DIR_IMAGE}/vxn/x86_64")

    # Everything else is upstream's: every variable that differs is one the bbappend sets.
    changed = set()
    for key in set(plain.keys()) | set(d.keys()):
        if key.startswith("_") or key in ("BBINCLUDED", "FILE_LAYERNAME"):
            continue
        if plain.getVar(key, False) != d.getVar(key, False):
            changed.add(key)
    assert changed == {"DEPENDS", "PACKAGE_ARCH", "RPROVIDES:vxn", "RREPLACES:vxn", "RCONFLICTS:vxn",
                       "do_compile", "do_install", "VXN_DEPLOYED_BLOBS", "VXN_CHECK",
                       "vxn_stage_deployed_blobs", "vxn_seal_installed_blobs"}, sorted(changed)
    for var in ("PACKAGES", "SRC_URI", "RDEPENDS:vxn", "FILES:vxn", "FILES:vxn-docker-config"):
        assert plain.getVar(var) == d.getVar(var), var


@pytest.mark.parametrize("edit,named", [
    (("file://vxn-sendtty.c \\", "file://vxn-sendtty.c \\\n    file://vxn-helper.c \\"), "vxn-helper.c"),
    (('"${B}/rootfs.img"', '"${B}/rootfs.squashfs"'), "no longer installs rootfs.img"),
])
def test_the_bbappend_refuses_an_upstream_it_no_longer_matches(bblib, tmp_path, upstream, edit, named):
    old, new = edit
    assert old in upstream, "the snapshot's vxn_1.0.bb changed: %r" % old
    d = parse_vxn(bblib, tmp_path, upstream.replace(old, new))
    reason = d.getVar("__SKIPPED") or ""
    assert "meta-vxn's vxn bbappend no longer matches" in reason and named in reason, reason


def test_vxn_dom0_blobs_steps_aside_beside_meta_virtualization(bblib, tmp_path):
    recipe = recipe_path("recipes-core", "vxn", "vxn-dom0-blobs_1.0.bb")
    build = Build(bblib, tmp_path / "build", local={"DISTRO_FEATURES": "virtualization xen"},
                  layers=[make_meta_virt(tmp_path)])
    assert not build.parse(recipe)[""].getVar("__SKIPPED")
    reason = build.parse(recipe, [DOM0_APPEND])[""].getVar("__SKIPPED")
    assert reason and "RPROVIDES vxn-dom0-blobs: install vxn" in reason, reason


def test_vxn_and_vxn_dom0_blobs_stage_and_seal_with_the_same_class_code(bblib, tmp_path, upstream):
    """One piece of code packages the deployed set, whichever package carries it to the Dom0."""
    vxn = parse_vxn(bblib, tmp_path / "vxn", upstream)
    recipe = recipe_path("recipes-core", "vxn", "vxn-dom0-blobs_1.0.bb")
    dom0 = Build(bblib, tmp_path / "dom0" / "build", local={"DISTRO_FEATURES": "virtualization xen"},
                 layers=[make_meta_virt(tmp_path / "dom0")]).parse(recipe)[""]
    for d in (vxn, dom0):
        assert any(c.endswith("/classes/vxn_deployed_blobs.bbclass") for c in d.getVar("__inherit_cache")), d.getVar("PN")
    for function in ("vxn_stage_deployed_blobs", "vxn_seal_installed_blobs"):
        assert vxn.getVar(function, False) == dom0.getVar(function, False), function
    for d in (vxn, dom0):
        assert "vxn-initramfs-create:do_deploy" in d.getVarFlag("do_compile", "depends").split()

