"""oelint-adv is clean on meta-vxn for every series it claims, and every suppression says why.

A suppression (`# nooelint: <rule>`) must be justified where it is made: by the comment line
just above it, or, for findings oelint reports on line 1 (whole-file rules) where nothing can
sit above, by the comment line just below it.
"""

import os
import shutil
import subprocess
import sys

import pytest

from bbharness import LAYER, SUPPORTED, missing

LINTED = (".bb", ".bbappend", ".bbclass", ".inc", ".conf")
# Where meta-vxn changes another layer's recipe on purpose (BBFILES_DYNAMIC): linted with every
# rule but oelint.vars.noncoreoverride, which wants each setting of a bbappend under a MACHINE or
# DISTRO override. That suits a BSP or distro layer; this integration is neither, it applies
# whenever meta-virtualization is there (docs/integration.md, "The Dom0 package").
DYNAMIC = os.path.join(LAYER, "dynamic-layers")
DYNAMIC_SUPPRESSED = ["oelint.vars.noncoreoverride"]


def layer_files():
    found = []
    for path, _, files in os.walk(LAYER):
        found += [os.path.join(path, f) for f in files if f.endswith(LINTED)]
    return sorted(found)


def oelint():
    beside = os.path.join(os.path.dirname(sys.executable), "oelint-adv")
    tool = beside if os.access(beside, os.X_OK) else shutil.which("oelint-adv")
    if not tool:
        missing("oelint-adv (pip install -r tests/requirements.txt)")
    return tool


@pytest.mark.parametrize("series", SUPPORTED)
def test_oelint_clean(series):
    files = layer_files()
    assert len(files) >= 5
    dynamic = [f for f in files if f.startswith(DYNAMIC + os.sep)]
    assert dynamic, "no dynamic-layers bbappend found"
    for group, extra in (([f for f in files if f not in dynamic], []),
                         (dynamic, ["--suppress=%s" % rule for rule in DYNAMIC_SUPPRESSED])):
        result = subprocess.run([oelint(), "--quiet", "--release", series] + extra + ["--"] + group,
                                capture_output=True, text=True, cwd=LAYER)
        assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
            result.stdout + result.stderr


def test_every_suppression_is_justified_where_it_is_made():
    for path in layer_files():
        with open(path, encoding="utf-8") as f:
            lines = [l.rstrip("\n") for l in f]
        for i, line in enumerate(lines):
            if not line.lstrip().startswith("# nooelint:"):
                continue
            neighbour = lines[i - 1] if i > 0 else (lines[1] if len(lines) > 1 else "")
            text = neighbour.lstrip("# ").strip()
            assert neighbour.lstrip().startswith("#") and "nooelint" not in neighbour and len(text) > 20, \
                "%s:%d: suppression without a justification comment next to it" % (path, i + 1)
