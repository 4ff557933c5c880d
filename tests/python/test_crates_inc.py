"""meta-vxn's vxn-blobs-crates.inc must list exactly Cargo.lock's crates.io packages.

Guards against a dependency bump that forgets the .inc: the cargo class builds with --frozen
from the crate:// entries, so a stale .inc breaks every Yocto build of vxn-blobs-native.
The expected entries are read here with tomllib, independently of scripts/gen-crates-inc.
"""

import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GEN = os.path.join(TOP, "scripts", "gen-crates-inc")
LOCK = os.path.join(TOP, "Cargo.lock")
INC = os.path.join(TOP, "meta-vxn", "recipes-devtools", "vxn-blobs", "vxn-blobs-crates.inc")


def load_generator():
    loader = importlib.machinery.SourceFileLoader("gen_crates_inc", GEN)
    spec = importlib.util.spec_from_loader("gen_crates_inc", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def run_gen(*args):
    return subprocess.run([sys.executable, GEN, *args], capture_output=True, text=True)


def lock_crates(path=LOCK):
    with open(path, "rb") as f:
        packages = tomllib.load(f)["package"]
    return {(p["name"], p["version"]): p["checksum"] for p in packages if "source" in p}


def inc_entries(path=INC):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    uris = set(re.findall(r"crate://crates\.io/([^/\s]+)/(\S+)", text))
    sums = {k: v for k, v in re.findall(r'^SRC_URI\[(\S+)\.sha256sum\] = "([0-9a-f]{64})"$', text, re.M)}
    return uris, sums


def test_inc_lists_every_lock_crate_with_its_checksum():
    expected = lock_crates()
    assert expected, "Cargo.lock lists no crates.io packages"
    uris, sums = inc_entries()
    assert uris == set(expected), "crate:// entries differ from Cargo.lock: run scripts/gen-crates-inc"
    assert sums == {"%s-%s" % k: v for k, v in expected.items()}


def test_check_mode_accepts_the_committed_inc():
    result = run_gen("--check")
    assert result.returncode == 0, result.stderr


def test_check_mode_fails_on_a_changed_checksum(tmp_path):
    lock = tmp_path / "Cargo.lock"
    text = open(LOCK, encoding="utf-8").read()
    first = re.search(r'checksum = "([0-9a-f]{64})"', text).group(1)
    lock.write_text(text.replace(first, "0" * 64, 1))
    result = run_gen("--check", "--lock", str(lock), "--output", INC)
    assert result.returncode == 1
    assert "does not match" in result.stderr and str(lock) in result.stderr


def test_check_mode_fails_on_an_added_crate(tmp_path):
    lock = tmp_path / "Cargo.lock"
    shutil.copy(LOCK, lock)
    with open(lock, "a", encoding="utf-8") as f:
        f.write('\n[[package]]\nname = "zzz-new"\nversion = "1.0.0"\n'
                'source = "registry+https://github.com/rust-lang/crates.io-index"\n'
                'checksum = "%s"\n' % ("a" * 64))
    assert run_gen("--check", "--lock", str(lock), "--output", INC).returncode == 1


def test_write_mode_reproduces_the_committed_inc(tmp_path):
    out = tmp_path / "crates.inc"
    result = run_gen("--output", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") == open(INC, encoding="utf-8").read()
    assert not (tmp_path / "crates.inc.tmp").exists()


def test_git_dependency_is_an_error_not_a_silent_omission(tmp_path):
    lock = tmp_path / "Cargo.lock"
    lock.write_text('version = 3\n\n[[package]]\nname = "foo"\nversion = "0.1.0"\n'
                    'source = "git+https://example.invalid/foo#abc"\n')
    out = tmp_path / "crates.inc"
    result = run_gen("--lock", str(lock), "--output", str(out))
    assert result.returncode == 2
    assert "foo 0.1.0" in result.stderr and "git+https" in result.stderr
    assert not out.exists()


def test_fallback_reader_agrees_with_tomllib():
    """Hosts with Python < 3.11 use the line reader; it must give the same list."""
    gen = load_generator()
    assert gen.crates_from_lock(LOCK, use_tomllib=False) == gen.crates_from_lock(LOCK, use_tomllib=True)
