"""Fixtures of the real-BitBake tier (tests/oe): the prepared tier and its series.

The tests of this directory share one work directory and run in file order (builds first,
then the parses and yocto-check-layer); tests/oe/run is how they are started.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import oetier  # noqa: E402
import reallayers  # noqa: E402

# The series the tier is about: builds run on the first of them that the run has; a parse of
# OE-core with meta-vxn on the others (test_parse.py), wrynose's being the real stack's.
# blacksail is OE-core master (the series after wrynose).
WANTED = ["wrynose", "scarthgap", "blacksail"]


# Whether this run selected the real layers' yocto-check-layer test, and the tests that run on
# the whole real stack (set at collection).
REAL_CHECK_SELECTED = []
REAL_STACK_SELECTED = []


# trylast: after -k and -m have deselected, so that a run of other tests starts no check-layer run.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    REAL_CHECK_SELECTED[:] = [item for item in items
                              if item.originalname == "test_yocto_check_layer_passes_beside_the_real_layers"]
    REAL_STACK_SELECTED[:] = [item for item in items if "real" in getattr(item, "fixturenames", ())]
    # The file order is kept on purpose: moving master's parse and native build into the
    # check-layer runs' time made three full parses share two cores and the tier a minute
    # longer (31:56 against 30:35-30:45).


@pytest.fixture(scope="session")
def tier():
    t = oetier.Tier()
    if not t.series:
        oetier.missing(oetier.ENABLE_HINT)
    t.prepare()
    # yocto-check-layer on the real layers parses the whole stack four times (without meta-vxn,
    # with it twice, and with its class inherited) and dumps world's signatures four times: started
    # now, it runs beside the builds (scripts/test.sh starts it even earlier, as a run of its
    # own). Its test waits for it and asserts on what it printed.
    stack = reallayers.discover(t) if REAL_CHECK_SELECTED or REAL_STACK_SELECTED else None
    if stack and REAL_CHECK_SELECTED:
        t.check_layer_runs["real"] = reallayers.start_check_layer(t, stack)
        oetier.log("real layers: yocto-check-layer started in the background")
    # The whole real stack's parse, for test_real_layers.py's commands on it, likewise.
    if stack and REAL_STACK_SELECTED:
        t.check_layer_runs["real-parse"] = reallayers.start_parse(t, stack)
        oetier.log("real layers: the parse of the whole stack started in the background")
    return t


def need_series(tier, name):
    """The series `name`, or a skip when this run was pointed at other ones. With snapshots
    under CI=true every wanted series must be there."""
    s = tier.series_named(name)
    if s:
        return s
    if os.environ.get("VXN_OE_SNAPSHOTS") and not os.environ.get("VXN_OE_SERIES"):
        oetier.missing("VXN_OE_SNAPSHOTS has no OE-core %s snapshot" % name)
    pytest.skip("this run tests %s only" % ", ".join(s.name for s in tier.series))


@pytest.fixture(scope="session")
def primary(tier):
    """The series the builds run on: wrynose (the current LTS) when present."""
    for name in WANTED:
        s = tier.series_named(name)
        if s:
            return s
    return tier.series[0]


@pytest.fixture(scope="session")
def stack(tier):
    """The real layers beside the tier's wrynose (reallayers.discover), or a skip that says how
    to give them (a failure under CI=true)."""
    s = reallayers.discover(tier)
    if not s:
        oetier.missing(reallayers.ENABLE_HINT)
    return s
