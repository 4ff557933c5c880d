"""meta-vxn with OE-core, on the series around the current one: a clean parse, the knobs where
users look for them, and (master) the native tool's build with master's cargo classes.

Each series gets one TOPDIR, check-<series> (oetier.check_dir): OE-core's configuration,
classes and core recipes with meta-vxn, masked as the builds are, since meta-vxn reaches no
recipe but its own; the parse of all of OE-core beside meta-vxn is the real stack's, on wrynose
(test_real_layers.py, with the same checks, and yocto-check-layer's test_parse). The current
series, wrynose, has no check-<series>: the build tests' masked parse on it asserts no warning
at all. yocto-check-layer runs on the real layers too; its runs on OE-core alone, with the
stand-in's scripts, were dropped as redundant (docs/testing.md, "What was tried to cut it").
"""

import os
import re

import pytest

import oetier
from conftest import need_series

from oetier import check_dir

# The oldest series meta-vxn supports and master.
PARSED_ALONE = ["scarthgap", "blacksail"]
# meta-vxn's recipes that check-<series> parses and does not skip (vxn-dom0-blobs is skipped
# there: it needs "xen" in DISTRO_FEATURES, as test_build.py shows).
OURS = ("vxn-blobs-native", "vxn-initramfs-create")


@pytest.mark.parametrize("name", PARSED_ALONE)
def test_oe_core_and_meta_vxn_parse_without_a_warning(tier, name):
    series = need_series(tier, name)
    bd = check_dir(tier, series)
    r = bd.bitbake("-p")
    assert not r.warnings(), "\n".join(r.warnings())
    m = re.search(r"Parsing of (\d+) \.bb files complete .* (\d+) masked, (\d+) errors", r.output)
    assert m and int(m.group(2)) > 500 and m.group(3) == "0", r.output[-1000:]
    # A skipped recipe is not listed.
    listed = bd.bitbake("-s").output
    for pn in OURS:
        assert re.search(r"^%s\s+:" % re.escape(pn), listed, re.M), "%s is not parsed:\n%s" % (pn, listed[-2000:])
    oetier.assert_knobs_shown(bd)


def test_native_tool_builds_with_master_cargo_classes(tier):
    """OE-core master's cargo_common exports ZSTD_SYS_USE_PKG_CONFIG; the recipe builds zstd
    (as xz and lz4) from the crates' bundled sources all the same, statically."""
    series = need_series(tier, "blacksail")
    # After the parse test, its server still up: this build parses nothing again.
    bd = check_dir(tier, series)
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
