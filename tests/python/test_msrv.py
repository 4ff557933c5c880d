"""Guards rust-version: it decides which Yocto series can build vxn-blobs-native.

Cargo.toml says 1.75 (scarthgap's rust). A dependency bump that pulls in a crate declaring a
newer rust-version would break every scarthgap build while nothing here noticed, since this
machine's toolchain is newer. Regression: lz4_flex 0.11.7 (rust-version 1.81) once slipped in
this way and was replaced by the lz4 crate.
"""

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def version(text):
    return tuple(int(part) for part in text.split("."))


def our_rust_version():
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["package"]["rust-version"]


def test_clippy_checks_the_same_msrv():
    with open(ROOT / "clippy.toml", "rb") as f:
        assert tomllib.load(f)["msrv"] == our_rust_version()


def test_no_dependency_needs_a_newer_rust():
    if shutil.which("cargo") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("cargo is required under CI=true")
        pytest.skip("cargo is not installed")
    host = subprocess.run(
        ["rustc", "-vV"], capture_output=True, text=True, check=True
    ).stdout
    triple = next(l.split(": ")[1] for l in host.splitlines() if l.startswith("host: "))
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked",
             "--filter-platform", triple],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout
    )
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    # What the native recipe builds: normal and build dependencies, not dev-dependencies.
    seen, stack = set(), [meta["resolve"]["root"]]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for dep in nodes[node]["deps"]:
            if any(k["kind"] in (None, "build") for k in dep["dep_kinds"]):
                stack.append(dep["pkg"])
    ours = version(our_rust_version())
    too_new = sorted(
        f'{packages[i]["name"]} {packages[i]["version"]} needs rust {packages[i]["rust_version"]}'
        for i in seen
        if packages[i].get("rust_version") and version(packages[i]["rust_version"]) > ours
    )
    assert len(seen) > 10, "the dependency walk found almost nothing"
    assert not too_new, f"rust-version is {our_rust_version()} but: {too_new}"
