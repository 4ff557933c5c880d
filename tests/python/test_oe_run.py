"""tests/oe/run prints only what this run measured.

The rebuild table it prints at the end is made of rows the build tests append as they run
(tests/oe/test_build.py, record). A run that skips them, or every test (no OE-core configured,
as here), once printed the previous run's table as if measured now. These run the real script
with OE-core left unconfigured, so the tier skips itself in seconds and no BitBake is needed.
"""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "tests" / "oe" / "run"

# A row test_build.record writes in a run, and a plugin that writes one through it: the tier's
# own code, called once this run's pytest session has started.
PLUGIN = '''
import sys, types
sys.path.insert(0, %r)
import test_build

def pytest_sessionstart(session):
    test_build.record(types.SimpleNamespace(work=%r), "a build of this run", types.SimpleNamespace(seconds=3.2),
                      ["do_compile", "do_deploy"])
'''


def run_tier(work, *args, env_extra=None):
    """tests/oe/run with no OE-core configured and CI unset: every test skips."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VXN_") and k != "CI"}
    env["VXN_OE_WORK"] = str(work)
    env.update(env_extra or {})
    r = subprocess.run([str(RUN), "-k", "first_build"] + list(args), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 skipped" in r.stdout, r.stdout
    return r.stdout


def stale_table(work):
    work.mkdir()
    with open(work / "rebuild-table.jsonl", "w", encoding="utf-8") as f:
        f.write(json.dumps({"scenario": "a build of an earlier run", "reran": [], "seconds": 7}) + "\n")


def test_a_run_that_built_nothing_prints_no_earlier_table(tmp_path):
    work = tmp_path / "work"
    stale_table(work)
    out = run_tier(work)
    assert "an earlier run" not in out and "rebuild table" not in out, out


def test_the_table_holds_this_runs_rows_alone(tmp_path):
    work = tmp_path / "work"
    stale_table(work)
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "vxn_row_plugin.py").write_text(PLUGIN % (str(ROOT / "tests" / "oe"), str(work)))
    out = run_tier(work, "-p", "vxn_row_plugin", env_extra={"PYTHONPATH": str(plugin)})
    table = out[out.index("oe-tier: rebuild table of this run"):]
    assert "| a build of this run | do_compile, do_deploy | 3 s |" in table, out
    assert "an earlier run" not in table, table
