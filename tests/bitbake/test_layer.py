"""meta-vxn parsed by the real BitBake: series, priority, task graph, mcdepends, knobs, sources.

These need no vxn-blobs binary. What they guard: the seed's task graph (nostamp,
SSTATE_SKIP_CREATION, noexec, deploy ordering) surviving the move to a class; mcdepends in the
exact `mc:<from>:<to>:<pn>:<task>` form and only for an enabled multiconfig; the vxn-blobs
recipe's sources unpacking to ${S} on every supported series.
"""

import hashlib
import json
import os
import re
import tomllib

import pytest

from bbharness import (LAYER, META_VIRT_PRIORITY, SUPPORTED, TOP, VXN_RECIPE, Build, make_meta_virt,
                       recipe_path)
TOOL_RECIPE = recipe_path("recipes-devtools", "vxn-blobs", "vxn-blobs_0.1.0.bb")
CLASS = os.path.join(LAYER, "classes", "vxn-initramfs-create.bbclass")

# The seed's deploy-only recipe disables these tasks (vxn-initramfs-create.inc).
# The stub core's sysroot and packaging tasks (OE-core's names), which a deploy-only recipe
# must not have: the seed marked them [noexec], which keeps their dependencies.
PACKAGING_TASKS = ["do_install", "do_package", "do_packagedata", "do_package_qa",
                   "do_package_write_ipk"]


def parse_vxn(bblib, tmp_path, series="wrynose", local=None, multiconfigs=(), with_meta_virt=True):
    layers = [make_meta_virt(tmp_path)] if with_meta_virt else []
    build = Build(bblib, tmp_path / "build", series=series, local=local, layers=layers,
                  multiconfigs=multiconfigs)
    return build.parse(VXN_RECIPE)


def test_layerseries_compat_is_the_series_whose_rust_builds_the_tool(bblib, tmp_path):
    with open(os.path.join(TOP, "Cargo.toml"), "rb") as f:
        assert tomllib.load(f)["package"]["rust-version"] == "1.75", \
            "rust-version changed: revisit LAYERSERIES_COMPAT_vxn (scarthgap ships rust 1.75)"
    builder = Build(bblib, tmp_path / "build", layers=[make_meta_virt(tmp_path)]).parse_config()
    assert builder.data.getVar("LAYERSERIES_COMPAT_vxn").split() == sorted(SUPPORTED)
    assert builder.data.getVar("LAYERDEPENDS_vxn").split() == ["core"]


@pytest.mark.parametrize("series", SUPPORTED)
def test_layer_parses_and_tool_sources_unpack_to_S(bblib, tmp_path, series):
    """file:// entries through FILESEXTRAPATHS land in ${S} with and without UNPACKDIR."""
    build = Build(bblib, tmp_path / "build", series=series, layers=[make_meta_virt(tmp_path)])
    stores = build.parse(TOOL_RECIPE)
    assert set(stores) == {"", "native"}
    d = stores["native"]
    assert d.getVar("PN") == "vxn-blobs-native"
    # The layer leaves S and UNPACKDIR to the series (insane.bbclass refuses either = WORKDIR).
    if series == "scarthgap":
        unpack_root = d.getVar("WORKDIR")
        assert d.getVar("UNPACKDIR") is None
    else:
        unpack_root = d.getVar("UNPACKDIR")
        assert unpack_root != d.getVar("WORKDIR")
    assert d.getVar("S") != d.getVar("WORKDIR")
    local = [u for u in d.getVar("SRC_URI").split() if u.startswith("file://")]
    fetcher = bblib.fetch2.Fetch(local, d)
    fetcher.download()
    fetcher.unpack(unpack_root)
    s = d.getVar("S")
    if series in ("styhead", "walnascar"):
        # As their do_unpack does: ${UNPACKDIR}/${BP} moves to S = ${WORKDIR}/${BP}.
        os.rename(os.path.join(unpack_root, d.getVar("BP")), s)
    for rel in ("Cargo.toml", "Cargo.lock", "LICENSE", "src/main.rs", "src/lib.rs"):
        assert os.path.isfile(os.path.join(s, rel)), "%s missing from S=%s" % (rel, s)
    assert not os.path.exists(os.path.join(s, "target")), "build leftovers copied into S"
    assert os.path.isfile(d.expand("${CARGO_MANIFEST_PATH}"))

    assert parse_vxn(bblib, tmp_path / "vxn", series=series)[""].getVar("PN") == "vxn-initramfs-create"


def test_unsupported_series_is_refused(bblib, tmp_path):
    build = Build(bblib, tmp_path / "build", series="nanbield")
    with pytest.raises(bblib.BBHandledException):
        build.parse_config()


def test_priority_beats_meta_virtualization(bblib, tmp_path):
    """Our vxn-initramfs-create must outrank meta-virtualization's recipe of the same name."""
    import re as regex
    meta_virt = make_meta_virt(tmp_path)
    theirs = os.path.join(meta_virt, "recipes-containers", "vcontainer", "vxn-initramfs-create_1.0.bb")
    builder = Build(bblib, tmp_path / "build", layers=[meta_virt]).parse_config()
    d = builder.data
    priorities = []
    for c in d.getVar("BBFILE_COLLECTIONS").split():
        pattern = d.getVar("BBFILE_PATTERN_" + c)
        priorities.append((c, pattern, regex.compile(pattern), int(d.getVar("BBFILE_PRIORITY_" + c))))
    collect = bblib.cooker.CookerCollectFiles(priorities)
    ours_pri, _, ours_layer = collect.calc_bbfile_priority(VXN_RECIPE)
    theirs_pri, _, theirs_layer = collect.calc_bbfile_priority(theirs)
    assert (ours_layer, theirs_layer) == ("vxn", "virtualization-layer")
    assert theirs_pri == META_VIRT_PRIORITY
    assert ours_pri > theirs_pri


def test_tool_recipe_sources_license_and_crates(bblib, tmp_path):
    stores = Build(bblib, tmp_path / "build").parse(TOOL_RECIPE)
    d = stores["native"]
    with open(os.path.join(TOP, "Cargo.toml"), "rb") as f:
        cargo = tomllib.load(f)["package"]
    assert d.getVar("PV") == cargo["version"], "rename vxn-blobs_<ver>.bb to Cargo.toml's version"

    with open(os.path.join(TOP, "LICENSE"), "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    assert d.getVar("LIC_FILES_CHKSUM") == "file://LICENSE;md5=%s" % md5
    assert d.getVar("LICENSE") == cargo["license"]

    with open(os.path.join(TOP, "Cargo.lock"), "rb") as f:
        lock = tomllib.load(f)
    # scarthgap's cargo (1.75) cannot read lock file version 4.
    assert lock.get("version", 1) <= 3
    crates = {(p["name"], p["version"]): p["checksum"] for p in lock["package"] if "source" in p}
    uris = [u for u in d.getVar("SRC_URI").split() if u.startswith("crate://")]
    assert sorted(uris) == sorted("crate://crates.io/%s/%s" % k for k in crates)
    # BitBake's crate fetcher names each entry and looks its sha256 up by that name: the .inc's
    # flags must be the ones it will check the downloads against (no network needed here).
    fetcher = bblib.fetch2.Fetch(uris, d)
    for (name, version), checksum in crates.items():
        ud = fetcher.ud["crate://crates.io/%s/%s" % (name, version)]
        assert ud.sha256_expected == checksum, name

    inherits = d.getVar("__inherit_cache") or []
    assert any(c.endswith("/cargo.bbclass") for c in inherits)
    assert any(c.endswith("/cargo-update-recipe-crates.bbclass") for c in inherits)
    assert not any("externalsrc" in c for c in inherits), "externalsrc blocks devtool modify"
    assert "vxn-blobs-native" not in (d.getVar("DEPENDS") or "")


MC_BY_ARCH = {"x86_64": "vruntime-x86-64", "i686": "vruntime-x86-64",
              "aarch64": "vruntime-aarch64", "arm": "vruntime-aarch64"}


@pytest.mark.parametrize("arch", sorted(MC_BY_ARCH))
@pytest.mark.parametrize("enabled", ["vruntime-x86-64", "vruntime-aarch64", ""])
def test_mcdepends_exact_or_absent(bblib, tmp_path, arch, enabled):
    multiconfigs = [enabled] if enabled else []
    stores = parse_vxn(bblib, tmp_path, local={"TARGET_ARCH": arch, "BBMULTICONFIG": enabled},
                       multiconfigs=multiconfigs)
    mc = MC_BY_ARCH[arch]
    # The recipe is parsed once for the default configuration and once per multiconfig; the
    # "from" part must name the configuration the recipe is being built in.
    for key, here in [("", "")] + [("mc:%s:" % m, m) for m in multiconfigs]:
        d = stores[key]
        assert d.getVar("VXN_MULTICONFIG") == mc
        got = d.getVarFlag("do_compile", "mcdepends")
        if mc == enabled:
            assert got == (
                "mc:{h}:{mc}:vdkr-tiny-initramfs-image:do_image_complete "
                "mc:{h}:{mc}:vdkr-rootfs-image:do_image_complete "
                "mc:{h}:{mc}:virtual/kernel:do_deploy").format(h=here, mc=mc)
            for dep in got.split():
                assert dep.count(":") == 4
        else:
            assert got is None
        assert d.getVarFlag("do_deploy", "mcdepends") is None


@pytest.mark.parametrize("arch,mc,blob,kernel", [
    ("x86_64", "vruntime-x86-64", "x86_64", "bzImage"),
    ("i686", "vruntime-x86-64", "x86_64", "bzImage"),
    ("i586", "vruntime-x86-64", "x86_64", "bzImage"),
    ("aarch64", "vruntime-aarch64", "aarch64", "Image"),
    ("arm", "vruntime-aarch64", "aarch64", "zImage"),
    ("riscv64", "vruntime-aarch64", "aarch64", "Image"),  # the seed's fallback
])
def test_arch_helpers_match_the_seed(bblib, tmp_path, arch, mc, blob, kernel):
    d = parse_vxn(bblib, tmp_path, local={"TARGET_ARCH": arch})[""]
    assert d.getVar("VXN_BLOB_ARCH") == blob
    assert d.getVar("VXN_KERNEL_IMAGETYPE") == kernel
    assert d.getVar("VXN_MULTICONFIG") == mc
    assert d.getVar("VXN_MC_DEPLOY_DIR") == os.path.join(
        d.getVar("TOPDIR"), "tmp-" + mc, "deploy", "images", "qemux86-64")


def test_task_graph_and_flags(bblib, tmp_path):
    d = parse_vxn(bblib, tmp_path)[""]
    tasks = d.getVar("__BBTASKS", False)
    # Incremental by default: every input is in the signatures (see the file-checksums test).
    assert not d.getVarFlag("do_compile", "nostamp")
    assert not d.getVarFlag("do_deploy", "nostamp")
    assert d.getVar("SSTATE_SKIP_CREATION") is None
    for task in PACKAGING_TASKS + ["do_populate_sysroot"]:
        assert task not in tasks, "%s should be deleted from a deploy-only recipe" % task
    assert d.getVar("PACKAGES") == ""
    assert d.getVar("PACKAGE_ARCH") == d.getVar("MACHINE_ARCH")
    assert d.getVar("EXCLUDE_FROM_WORLD") == "1"
    assert d.getVar("INHIBIT_DEFAULT_DEPS") == "1"
    assert d.getVar("DEPENDS").split() == ["vxn-blobs-native"]
    assert d.getVar("VXN_RUNTIME") == "vdkr"

    assert "do_deploy" in tasks
    assert "do_compile" in d.getVarFlag("do_deploy", "deps")
    assert "do_deploy" in d.getVarFlag("do_build", "deps")
    # Progress handlers only work for shell tasks; the spec is written by a python prefunc.
    for task in ("do_compile", "do_deploy"):
        assert not d.getVarFlag(task, "python"), "%s must be a shell task" % task
        assert "vxn_write_spec" in d.getVarFlag(task, "prefuncs").split()
    assert d.getVarFlag("do_compile", "progress") == "percent"
    assert d.getVarFlag("vxn_write_spec", "python") == "1"
    assert "vxn-blobs compile" in d.getVar("do_compile", False)
    assert "vxn_run_placing deploy" in d.getVar("do_deploy", False)
    assert "vxn-blobs $command" in d.getVar("vxn_run_placing", False)
    assert d.getVarFlag("do_deploy", "cleandirs") == d.getVar("DEPLOYDIR")


def test_force_build_restores_the_seeds_always_rebuild(bblib, tmp_path):
    d = parse_vxn(bblib, tmp_path, local={"VXN_FORCE_BUILD": "1"})[""]
    assert d.getVarFlag("do_compile", "nostamp") == "1"
    assert d.getVarFlag("do_deploy", "nostamp") == "1"
    # Per task: a whole-recipe "1" would also drop populate_lic's and the spdx tasks' sstate.
    assert d.getVar("SSTATE_SKIP_CREATION:task-deploy") == "1"
    assert d.getVar("SSTATE_SKIP_CREATION") is None


@pytest.mark.parametrize("enabled", [True, False])
def test_inputs_no_task_produces_are_in_the_signature_by_content(bblib, tmp_path, enabled):
    local = {"BBMULTICONFIG": "vruntime-x86-64"} if enabled else {}
    d = parse_vxn(bblib, tmp_path, local=local,
                  multiconfigs=["vruntime-x86-64"] if enabled else [])[""]
    mcdir = d.getVar("VXN_MC_DEPLOY_DIR")
    everything = [os.path.join(mcdir, "vdkr-tiny-initramfs-image-qemux86-64.cpio.gz"),
                  os.path.join(mcdir, "vdkr-rootfs-image-qemux86-64.rootfs.squashfs"),
                  os.path.join(mcdir, "bzImage"),
                  os.path.join(d.getVar("DEPLOY_DIR_IMAGE"), "bzImage")]
    # With the multiconfig, its images and kernel reach the signature through the mcdepends
    # task hashes; only the kernel of this configuration's deploy dir is not built by them.
    expected = everything[3:] if enabled else everything
    got = (d.getVarFlag("do_compile", "file-checksums") or "").split()
    assert got == ["%s*:True" % p for p in expected]


def test_install_blobs_packages_them_for_the_dom0(bblib, tmp_path):
    d = parse_vxn(bblib, tmp_path, local={"VXN_INSTALL_BLOBS": "1",
                                         "DISTRO_FEATURES": "virtualization xen"})[""]
    tasks = d.getVar("__BBTASKS", False)
    for task in PACKAGING_TASKS + ["do_deploy"]:
        assert task in tasks, task
    assert "do_populate_sysroot" not in tasks
    assert d.getVar("PACKAGES") == "vxn-initramfs-create"
    assert d.getVar("VXN_INSTALL_DIR") == "/usr/share/vxn/x86_64"
    assert "/usr/share/vxn/x86_64" in d.getVar("FILES:vxn-initramfs-create").split()
    for flag in ("INHIBIT_PACKAGE_STRIP", "INHIBIT_PACKAGE_DEBUG_SPLIT", "SKIP_FILEDEPS"):
        assert d.getVar(flag) == "1", flag
    assert "vxn_run_placing install" in d.getVar("do_install", False)
    assert "vxn_write_spec" in d.getVarFlag("do_install", "prefuncs").split()

    d = parse_vxn(bblib, tmp_path, local={"VXN_INSTALL_BLOBS": "1", "VXN_DEPLOY_BLOBS": "0",
                                                "DISTRO_FEATURES": "virtualization xen"})[""]
    assert "do_deploy" not in d.getVar("__BBTASKS", False)
    assert "do_install" in d.getVar("__BBTASKS", False)


DOM0_RECIPE = recipe_path("recipes-core", "vxn", "vxn-dom0-blobs_1.0.bb")


@pytest.mark.parametrize("arch", ["x86_64", "i686", "aarch64", "arm"])
def test_vxn_dom0_blobs_packages_the_deploy_under_the_names_it_has(bblib, tmp_path, arch):
    """No assembly of its own: no do_deploy, no mcdepends or inputs, the deploy of
    vxn-initramfs-create's blob arch and kernel name for every TARGET_ARCH."""
    local = {"TARGET_ARCH": arch, "DISTRO_FEATURES": "virtualization xen", "BBMULTICONFIG": MC_BY_ARCH[arch]}
    build = Build(bblib, tmp_path / "build", local=local, layers=[make_meta_virt(tmp_path)],
                  multiconfigs=[MC_BY_ARCH[arch]])
    vic, dom0 = build.parse(VXN_RECIPE)[""], build.parse(DOM0_RECIPE)[""]
    assert not dom0.getVar("__SKIPPED"), dom0.getVar("__SKIPPED")
    assert dom0.getVar("VXN_DEPLOYED_BLOBS") == os.path.join(vic.getVar("DEPLOY_DIR_IMAGE"), "vxn", vic.getVar("VXN_BLOB_ARCH"))
    assert dom0.getVar("VXN_KERNEL_IMAGETYPE") == vic.getVar("VXN_KERNEL_IMAGETYPE")
    assert dom0.getVar("VXN_INSTALL_DIR") == vic.getVar("VXN_INSTALL_DIR") == "/usr/share/vxn/" + vic.getVar("VXN_BLOB_ARCH")
    tasks = dom0.getVar("__BBTASKS", False)
    for task in PACKAGING_TASKS:
        assert task in tasks, task
    assert "do_deploy" not in tasks and "do_populate_sysroot" not in tasks
    assert dom0.getVarFlag("do_compile", "mcdepends") is None
    assert dom0.getVarFlag("do_compile", "file-checksums") is None
    assert dom0.getVar("DEPENDS").split() == ["vxn-blobs-native"]
    assert dom0.getVar("PACKAGES") == "vxn-dom0-blobs"
    assert dom0.getVar("VXN_INSTALL_DIR") in dom0.getVar("FILES:vxn-dom0-blobs").split()
    assert dom0.getVar("PACKAGE_ARCH") == dom0.getVar("MACHINE_ARCH")
    for flag in ("INHIBIT_PACKAGE_STRIP", "INHIBIT_PACKAGE_DEBUG_SPLIT", "SKIP_FILEDEPS", "EXCLUDE_FROM_WORLD"):
        assert dom0.getVar(flag) == "1", flag
    reason = Build(bblib, tmp_path / "nox", local={"DISTRO_FEATURES": "virtualization"}).parse(DOM0_RECIPE)[""].getVar("__SKIPPED")
    assert reason and "missing required DISTRO_FEATURES: 'xen'" in reason, reason


@pytest.mark.parametrize("local,missing_feature", [
    ({"DISTRO_FEATURES": ""}, "virtualization"),
    ({"DISTRO_FEATURES": "virtualization", "VXN_INSTALL_BLOBS": "1"}, "xen"),
    ({"DISTRO_FEATURES": "virtualization", "VXN_REQUIRED_DISTRO_FEATURES": "virtualization vxn"}, "vxn"),
])
def test_skipped_without_the_distro_features_it_needs(bblib, tmp_path, local, missing_feature):
    d = parse_vxn(bblib, tmp_path, local=local)[""]
    reason = d.getVar("__SKIPPED")
    assert reason and "missing required DISTRO_FEATURES: '%s'" % missing_feature in reason, reason


def test_scripts_come_from_meta_virtualization_found_in_bblayers(bblib, tmp_path):
    d = parse_vxn(bblib, tmp_path)[""]
    scripts = os.path.join(str(tmp_path), "meta-virtualization", "recipes-containers", "vcontainer", "files")
    assert d.getVar("VXN_SCRIPTS_DIR") == scripts
    assert d.getVar("FILESPATH").split(":")[0] == scripts
    subdir = ";subdir=" + d.getVar("BP")
    assert d.getVar("SRC_URI").split() == ["file://vxn-init.sh" + subdir,
                                           "file://vcontainer-init-common.sh" + subdir]


def test_without_meta_virtualization_the_recipe_is_skipped_with_a_hint(bblib, tmp_path):
    d = parse_vxn(bblib, tmp_path, with_meta_virt=False)[""]
    reason = d.getVar("__SKIPPED")
    assert reason and "recipes-containers/vcontainer/files" in reason and "VXN_SCRIPTS_DIR" in reason


def test_scripts_dir_knob_points_elsewhere(bblib, tmp_path):
    own = tmp_path / "my-scripts"
    own.mkdir()
    (own / "extra.sh").write_text("#!/bin/sh\n")
    d = parse_vxn(bblib, tmp_path, with_meta_virt=False,
                  local={"VXN_SCRIPTS_DIR": str(own), "VXN_INJECT": "extra.sh:/usr/bin/extra:0700"})[""]
    assert d.getVar("SRC_URI").split() == ["file://extra.sh;subdir=" + d.getVar("BP")]
    fetcher = bblib.fetch2.Fetch(["file://extra.sh"], d)
    assert fetcher.localpath("file://extra.sh") == str(own / "extra.sh")


@pytest.mark.parametrize("entry,complaint", [
    ("vxn-init.sh:/vxn-init.sh", "SRCNAME:DEST:MODE"),
    ("vxn-init.sh:vxn-init.sh:0755", "DEST must be an absolute path"),
    ("vxn-init.sh:/vxn-init.sh:755x", "MODE must be octal"),
    ("../x.sh:/x.sh:0755", "SRCNAME must be a relative file name"),
])
def test_bad_inject_entry_fails_parsing_with_the_entry_named(bblib, tmp_path, caplog, entry, complaint):
    with pytest.raises(Exception):
        parse_vxn(bblib, tmp_path, local={"VXN_INJECT": entry})
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert entry in messages and complaint in messages


def test_every_knob_has_a_default_and_a_doc(bblib, tmp_path):
    """In every class of the layer: vxn-initramfs-create's, and vxn_deployed_blobs' (parsed
    through vxn-dom0-blobs, which inherits it)."""
    build = Build(bblib, tmp_path / "build", local={"DISTRO_FEATURES": "virtualization xen"},
                  layers=[make_meta_virt(tmp_path)])
    stores = {CLASS: build.parse(VXN_RECIPE)[""],
              os.path.join(LAYER, "classes", "vxn_deployed_blobs.bbclass"): build.parse(DOM0_RECIPE)[""]}
    assert sorted(stores) == sorted(os.path.join(LAYER, "classes", c) for c in os.listdir(os.path.join(LAYER, "classes"))
                                    if c != "vxn_blob_arch.bbclass"), "a new class: add its knobs here"
    documented = open(os.path.join(TOP, "docs", "integration.md"), encoding="utf-8").read()
    count = 0
    for path, d in stores.items():
        with open(path, encoding="utf-8") as f:
            knobs = re.findall(r"^(VXN_[A-Z_]+) \?{1,2}= ", f.read(), re.M)
        count += len(knobs)
        for knob in knobs:
            assert d.getVarFlag(knob, "doc"), "%s has no [doc]" % knob
            assert knob in documented, "%s is not in docs/integration.md" % knob
    assert count >= 17
    d = stores[CLASS]
    for task in ("do_compile", "do_deploy", "vxn_write_spec", "vxn_warn_missing_kernel"):
        assert d.getVarFlag(task, "doc"), task
    d = stores[os.path.join(LAYER, "classes", "vxn_deployed_blobs.bbclass")]
    for function in ("vxn_stage_deployed_blobs", "vxn_seal_installed_blobs"):
        assert d.getVarFlag(function, "doc"), function


def write_spec(bblib, d):
    bblib.build.exec_func("vxn_write_spec", d)
    with open(d.getVar("VXN_SPEC"), encoding="utf-8") as f:
        return json.load(f)


def test_spec_is_schema_1_json_from_the_configuration(bblib, tmp_path):
    d = parse_vxn(bblib, tmp_path, local={"VXN_JOBS": "3", "VXN_KERNEL_REQUIRED": "1"})[""]
    spec = write_spec(bblib, d)
    mcdir = d.getVar("VXN_MC_DEPLOY_DIR")
    unpack = d.getVar("S")
    assert spec == {
        "schema": 1,
        "runtime": "vdkr",
        "machine": "qemux86-64",
        "multiconfig": "vruntime-x86-64",
        "target_arch": "x86_64",
        "blob_arch": "x86_64",
        "initramfs": os.path.join(mcdir, "vdkr-tiny-initramfs-image-qemux86-64.cpio.gz"),
        "rootfs": os.path.join(mcdir, "vdkr-rootfs-image-qemux86-64.rootfs.squashfs"),
        "kernel": os.path.join(mcdir, "bzImage"),
        "kernel_name": "bzImage",
        "kernel_required": True,
        "inject": [
            {"source": os.path.join(unpack, "vxn-init.sh"), "dest": "/vxn-init.sh", "mode": "0755"},
            {"source": os.path.join(unpack, "vcontainer-init-common.sh"),
             "dest": "/vcontainer-init-common.sh", "mode": "0755"},
        ],
        "build_dir": d.getVar("B"),
        "install_dir": "/usr/share/vxn/x86_64",
        "deploy_dir": d.getVar("DEPLOYDIR"),
        "compression": "xz",
        "check": "warn",
        "jobs": 3,
        "source_date_epoch": 1302044400,
        "block_cache": {"dir": os.path.join(d.getVar("TOPDIR"), "sstate-cache", "vxn-blocks"),
                        "max_size": "5G", "read_only": False},
    }
    d.setVar("VXN_BLOCK_CACHE", "")
    assert "block_cache" not in write_spec(bblib, d)


def task_hashes(bblib, d):
    """The base hash of each task of a parsed recipe, as BitBake's signature generator makes it."""
    ignored = set((d.getVar("BB_BASEHASH_IGNORE_VARS") or "").split())
    tasklist, gendeps, lookupcache = bblib.data.generate_dependencies(d, ignored)
    _, basehash = bblib.data.generate_dependency_hash(tasklist, gendeps, lookupcache, ignored, "vxn")
    return basehash


def test_the_block_cache_is_in_no_task_signature(bblib, tmp_path):
    """Where blocks are cached changes how fast, not what: builders with other caches (or none)
    must share sstate objects. A knob that does change the blobs shows the test can fail."""
    base = task_hashes(bblib, parse_vxn(bblib, tmp_path)[""])
    other_cache = task_hashes(bblib, parse_vxn(bblib, tmp_path, local={
        "VXN_BLOCK_CACHE": "/elsewhere", "VXN_BLOCK_CACHE_SIZE": "1G",
        "VXN_BLOCK_CACHE_READ_ONLY": "1"})[""])
    no_cache = task_hashes(bblib, parse_vxn(bblib, tmp_path, local={"VXN_BLOCK_CACHE": ""})[""])
    keep = task_hashes(bblib, parse_vxn(bblib, tmp_path, local={"VXN_COMPRESSION": "keep"})[""])
    compile_task = [t for t in base if t.endswith(":do_compile")]
    assert compile_task, sorted(base)
    assert base == other_cache == no_cache
    assert keep[compile_task[0]] != base[compile_task[0]]


def test_the_thread_count_is_no_input_of_the_signatures(bblib, tmp_path):
    """Builders sharing sstate each set VXN_JOBS to their own core count: it changes how fast the
    blobs are made, not their bytes, so it stays out of do_compile's and do_deploy's signatures,
    while a knob that changes the bytes is in them (tests/oe/test_sharing.py shows the sharing
    between two builders with the real BitBake)."""
    threads = {"BB_NUMBER_THREADS": "7"}
    base = task_hashes(bblib, parse_vxn(bblib, tmp_path, local=threads)[""])
    for jobs in ("1", "${BB_NUMBER_THREADS}"):
        assert task_hashes(bblib, parse_vxn(bblib, tmp_path, local=dict(threads, VXN_JOBS=jobs))[""]) == base, jobs
    keep = task_hashes(bblib, parse_vxn(bblib, tmp_path, local=dict(threads, VXN_COMPRESSION="keep"))[""])
    for task in ("vxn:do_compile", "vxn:do_deploy"):
        assert keep[task] != base[task], task


def test_the_blobs_time_is_the_fallback_and_in_the_signatures(bblib, tmp_path):
    """SOURCE_DATE_EPOCH is SOURCE_DATE_EPOCH_FALLBACK, not the scripts' mtimes (each builder's
    own checkout times, which OE-core would take from ${S}); so the fallback is an input of the
    blobs, in do_compile's and do_deploy's signatures (tests/oe/test_sharing.py gives builder B
    a checkout with other mtimes and gets builder A's bytes)."""
    base = task_hashes(bblib, parse_vxn(bblib, tmp_path, local={"SOURCE_DATE_EPOCH_FALLBACK": "1302044400"})[""])
    d = parse_vxn(bblib, tmp_path, local={"SOURCE_DATE_EPOCH_FALLBACK": "7"})[""]
    other = task_hashes(bblib, d)
    for task in ("vxn:do_compile", "vxn:do_deploy"):
        assert other[task] != base[task], task
    assert d.getVar("SOURCE_DATE_EPOCH") == "7"
    assert write_spec(bblib, d)["source_date_epoch"] == 7


def test_spec_kernel_prefers_multiconfig_then_falls_back_to_deploy_dir_image(bblib, tmp_path):
    d = parse_vxn(bblib, tmp_path)[""]
    mc_kernel = os.path.join(d.getVar("VXN_MC_DEPLOY_DIR"), "bzImage")
    main_kernel = os.path.join(d.getVar("DEPLOY_DIR_IMAGE"), "bzImage")
    assert write_spec(bblib, d)["kernel"] == mc_kernel  # neither: where it was expected
    os.makedirs(os.path.dirname(main_kernel))
    open(main_kernel, "wb").close()
    assert write_spec(bblib, d)["kernel"] == main_kernel
    os.makedirs(os.path.dirname(mc_kernel))
    open(mc_kernel, "wb").close()
    assert write_spec(bblib, d)["kernel"] == mc_kernel
    assert write_spec(bblib, d)["kernel_required"] is False


def test_static_checks_of_yocto_check_layer():
    with open(os.path.join(LAYER, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert re.search(r"maintainer", readme, re.I)
    assert re.search(r"patch", readme, re.I)
    assert re.search(r"[\w.+-]+@[\w-]+\.[\w.-]+", readme)
    assert os.path.isfile(os.path.join(LAYER, "SECURITY.md"))
    with open(os.path.join(LAYER, "conf", "layer.conf"), encoding="utf-8") as f:
        conf = f.read()
    assert re.search(r"^LAYERSERIES_COMPAT_vxn = ", conf, re.M)
    for path, _, files in os.walk(LAYER):
        for name in files:
            if name.endswith((".bb", ".bbclass", ".inc", ".conf", ".bbappend")):
                with open(os.path.join(path, name), encoding="utf-8") as f:
                    assert "[network]" not in f.read(), name
