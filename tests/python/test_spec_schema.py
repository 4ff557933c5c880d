"""docs/spec.schema.json against the examples in docs/spec.md, and both against vxn-blobs.

Blocks fenced as ```json in docs/spec.md are examples that must be valid; blocks fenced as
```json-invalid must be rejected. The schema is checked with the pinned jsonschema package;
when the binary is known (VXN_BLOBS, as scripts/test.sh sets it) each example is also given to
`vxn-blobs compile`, which must agree: a valid example fails later (its files do not exist),
never with a spec error, and an invalid one fails with a spec error.
"""

import json
import os
import pathlib
import re
import subprocess

import jsonschema
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC_MD = ROOT / "docs" / "spec.md"
SCHEMA = json.loads((ROOT / "docs" / "spec.schema.json").read_text())
FENCE = re.compile(r"^```(json|json-invalid)\n(.*?)^```", re.S | re.M)


def examples(kind):
    found = [m.group(2) for m in FENCE.finditer(SPEC_MD.read_text()) if m.group(1) == kind]
    assert found, f"docs/spec.md has no ```{kind} blocks"
    return [pytest.param(json.loads(text), id=f"{kind}-{i}") for i, text in enumerate(found)]


def binary():
    path = os.environ.get("VXN_BLOBS")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("VXN_BLOBS must point at the vxn-blobs binary when CI=true")
    pytest.skip("VXN_BLOBS is not set; only the schema is checked")


def compile_error(spec, tmp_path):
    """Runs compile on `spec` and returns its single error line."""
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "RUST_LOG")}
    run = subprocess.run(
        [binary(), "compile", "--spec", str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )
    assert run.returncode == 1, run
    assert "panicked" not in run.stderr, run.stderr
    errors = [l for l in run.stderr.splitlines() if l.startswith("vxn-blobs: error: ")]
    assert len(errors) == 1, run.stderr
    return errors[0]


def test_the_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("spec", examples("json"))
def test_documented_examples_are_valid(spec):
    jsonschema.Draft202012Validator(SCHEMA).validate(spec)


@pytest.mark.parametrize("spec", examples("json-invalid"))
def test_documented_counter_examples_are_invalid(spec):
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(spec)


@pytest.mark.parametrize("spec", examples("json"))
def test_the_tool_accepts_the_documented_examples(spec, tmp_path):
    line = compile_error(spec, tmp_path)
    assert not line.startswith("vxn-blobs: error: spec "), line


@pytest.mark.parametrize("spec", examples("json-invalid"))
def test_the_tool_rejects_the_counter_examples(spec, tmp_path):
    line = compile_error(spec, tmp_path)
    assert line.startswith("vxn-blobs: error: spec "), line


def test_the_schema_lists_exactly_the_keys_the_tool_knows(tmp_path):
    """An unknown key makes the tool list every key it knows; the schema must have the same."""
    spec = examples("json")[0].values[0] | {"no_such_key": 1}
    line = compile_error(spec, tmp_path)
    known = re.search(r"expected one of (.*?) at line", line)
    assert known, line
    tool_keys = set(re.findall(r"`(\w+)`", known.group(1)))
    assert tool_keys == set(SCHEMA["properties"]), line
    assert set(SCHEMA["required"]) <= tool_keys
