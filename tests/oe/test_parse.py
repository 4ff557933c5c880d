"""meta-vxn with all of OE-core, on every series: a clean parse, the knobs where users look for
them, and (master) the native tool's build with master's cargo classes.

Each series gets one TOPDIR, check-<series> (oetier.check_dir). yocto-check-layer runs on the
real layers (test_real_layers.py), which it tests meta-vxn beside; its runs on OE-core alone,
with the stand-in's scripts, were dropped as redundant (docs/integration.md, "The real-layers
tier").
"""

import os
import re

import pytest

import oetier
from conftest import WANTED, need_series

from oetier import check_dir


@pytest.mark.parametrize("name", WANTED)
def test_oe_core_and_meta_vxn_parse_without_a_warning(tier, name):
    series = need_series(tier, name)
    bd = check_dir(tier, series)
    r = bd.bitbake("-p")
    assert not r.warnings(), "\n".join(r.warnings())
    m = re.search(r"Parsing of (\d+) \.bb files complete .* (\d+) errors", r.output)
    assert m and int(m.group(1)) > 500 and m.group(2) == "0", r.output[-1000:]

    # The knobs, where a user looks them up: value, and the class line that set it.
    r = bd.bitbake("-r", "vxn-initramfs-create", "VXN_FORCE_BUILD", tool="bitbake-getvar")
    assert 'VXN_FORCE_BUILD="0"' in r.output, r.output
    assert "classes/vxn-initramfs-create.bbclass" in r.output, r.output
    env = bd.bitbake("-e", "vxn-initramfs-create").output
    for knob in ("VXN_RUNTIME", "VXN_MULTICONFIG", "VXN_BLOB_ARCH", "VXN_KERNEL_IMAGETYPE",
                 "VXN_MC_DEPLOY_DIR", "VXN_INITRAMFS", "VXN_ROOTFS", "VXN_KERNEL_DIRS",
                 "VXN_INJECT", "VXN_COMPRESSION", "VXN_FORCE_BUILD", "VXN_INSTALL_BLOBS",
                 "VXN_CHECK", "VXN_SPEC"):
        assert re.search(r"^%s=" % knob, env, re.M), knob
    assert re.search(r'^VXN_ROOTFS=".*/tmp-vruntime-x86-64/deploy/images/qemux86-64/'
                     r'vdkr-rootfs-image-qemux86-64\.rootfs\.squashfs"$', env, re.M)
    assert re.search(r'^PACKAGE_ARCH="qemux86_64"$', env, re.M)


def test_native_tool_builds_with_master_cargo_classes(tier):
    """OE-core master's cargo_common exports ZSTD_SYS_USE_PKG_CONFIG; the recipe builds zstd
    (as xz and lz4) from the crates' bundled sources all the same, statically."""
    series = need_series(tier, "blacksail")
    layers = [os.path.join(tier.checkout, "meta-vxn")]
    bd = oetier.BuildDir(tier, series, "build-" + series.name, layers, mask=True)
    bd.bitbake("vxn-blobs-native")
    with open(bd.path("tmp", "work", "x86_64-linux", "vxn-blobs-native", "0.1.0", "temp", "run.do_compile"),
              encoding="utf-8") as f:
        env = f.read()
    exported = env.find('export ZSTD_SYS_USE_PKG_CONFIG="1"')
    assert exported >= 0, "master no longer exports it: revisit the recipe's comment"
    assert env.find("unset ZSTD_SYS_USE_PKG_CONFIG", exported) > exported
    tool = bd.path("tmp", "sysroots-components", "x86_64", "vxn-blobs-native", "usr", "bin", "vxn-blobs")
    needed = os.popen("readelf -d %s" % tool).read()
    for lib in ("libzstd", "liblzma", "liblz4"):
        assert lib not in needed, "%s linked dynamically:\n%s" % (lib, needed)
    assert "vxn-blobs 0.1.0" in os.popen("%s --version" % tool).read()
