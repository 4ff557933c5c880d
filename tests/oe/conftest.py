"""Fixtures of the real-BitBake tier (tests/oe): the prepared tier and its series.

The tests of this directory share one work directory and run in file order (builds first,
then the full parses and yocto-check-layer); tests/oe/run is how they are started.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import oetier  # noqa: E402

# The series the tier is about: builds run on the first of them that the run has, the parse on
# each. blacksail is OE-core master (the series after wrynose).
WANTED = ["wrynose", "scarthgap", "blacksail"]


@pytest.fixture(scope="session")
def tier():
    t = oetier.Tier()
    if not t.series:
        oetier.missing(oetier.ENABLE_HINT)
    t.prepare()
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
