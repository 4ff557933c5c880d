"""Drive the real BitBake library on meta-vxn, offline and without OE-core.

(Helpers and fixtures for tests/bitbake; conftest.py re-exports the fixtures. A module name of
its own, so that another suite's conftest can never shadow it.)

PyPI's bitbake-setup ships the whole `bb` library but neither bitbake-server/-worker nor the
`hashserv` package, so `bitbake` and tinfoil cannot start. The parser and the task executor can
be used directly, as bitbake's worker does: CookerDataBuilder parses bblayers.conf, the layers
and stub-core's bitbake.conf; parseRecipeVariants parses a recipe (anonymous python included,
once per multiconfig); bb.build.exec_task runs a task with its log in ${T}/log.do_<task>.

Tests that need `bb` skip when it is missing, except under CI=true, where they fail.
"""

import logging
import os
import sys
import types

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
LAYER = os.path.join(TOP, "meta-vxn")
STUB_CORE = os.path.join(HERE, "stub-core")
IN_CI = os.environ.get("CI") == "true"

# LAYERSERIES_COMPAT_vxn: the series whose rust builds vxn-blobs (rust-version 1.75 and up).
SUPPORTED = ["scarthgap", "styhead", "walnascar", "whinlatter", "wrynose", "blacksail"]

# meta-virtualization's conf/layer.conf uses collection "virtualization-layer", priority 8.
META_VIRT_PRIORITY = 8


def missing(what):
    """Skip for a missing external requirement, or fail under CI=true where nothing may be missing."""
    if IN_CI:
        pytest.fail("%s (CI=true: required)" % what)
    pytest.skip(what)


def _stub_servers():
    # bb.siggen imports hashserv and bb.cooker imports prserv at module level; PyPI's
    # bitbake-setup ships neither. Only the hash-equivalence and PR servers use them, and these
    # tests run neither (signature handler "noop", no PRSERV_HOST).
    for package, sub in (("hashserv", "client"), ("prserv", "serv")):
        if package in sys.modules:
            continue
        try:
            __import__(package)
            continue
        except ImportError:
            pass
        parent = types.ModuleType(package)
        child = types.ModuleType(package + "." + sub)
        setattr(parent, sub, child)
        sys.modules[package] = parent
        sys.modules[package + "." + sub] = child


def import_bb():
    _stub_servers()
    try:
        import bb
        import bb.build
        import bb.cooker
        import bb.cookerdata
        import bb.data
        import bb.event
        import bb.fetch2
        import bb.parse
        import bb.siggen
        import bb.utils
    except ImportError as e:
        missing("the bb library (pip install -r tests/requirements.txt) cannot be imported: %s" % e)
    return bb


@pytest.fixture(scope="session")
def bblib():
    return import_bb()


class Build:
    """A TOPDIR with conf/bblayers.conf and conf/local.conf, parsed by the real BitBake."""

    def __init__(self, bb, topdir, series="wrynose", local=None, layers=None, multiconfigs=()):
        self.bb = bb
        self.topdir = str(topdir)
        conf = os.path.join(self.topdir, "conf")
        os.makedirs(os.path.join(conf, "multiconfig"), exist_ok=True)
        layers = [STUB_CORE, LAYER] + list(layers or [])
        with open(os.path.join(conf, "bblayers.conf"), "w") as f:
            f.write('BBPATH = "${TOPDIR}"\nBBFILES ?= ""\nSTUB_SERIES = "%s"\nBBLAYERS = "%s"\n'
                    % (series, " ".join(layers)))
        settings = {
            "MACHINE": "qemux86-64",
            "TARGET_ARCH": "x86_64",
            # What docs/integration.md tells users to add; tests of the skip remove it.
            "DISTRO_FEATURES": "virtualization",
            "STUB_HOSTPATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        settings.update(local or {})
        with open(os.path.join(conf, "local.conf"), "w") as f:
            for key, value in settings.items():
                f.write('%s = "%s"\n' % (key, value))
        for mc in multiconfigs:
            # As meta-virtualization's vruntime-*.conf: each multiconfig has its own TMPDIR.
            with open(os.path.join(conf, "multiconfig", mc + ".conf"), "w") as f:
                f.write('TMPDIR = "${TOPDIR}/tmp-%s"\n' % mc)

    def parse_config(self):
        bb = self.bb
        cfg = bb.cookerdata.CookerConfiguration()
        cfg.env = {"PATH": os.environ.get("PATH", "")}
        old = os.getcwd()
        os.chdir(self.topdir)
        try:
            builder = bb.cookerdata.CookerDataBuilder(cfg, worker=False)
            builder.parseBaseConfiguration()
        finally:
            os.chdir(old)
        return builder

    def parse(self, recipe, appends=()):
        """All datastores of one recipe (with these bbappends): keys "" (default), "native",
        "mc:<mc>:" ..."""
        builder = self.parse_config()
        return builder.parseRecipeVariants(recipe, list(appends))


def recipe_path(*parts):
    return os.path.join(LAYER, *parts)


VXN_RECIPE = recipe_path("recipes-core", "vxn", "vxn-initramfs-create_1.0.bb")


def make_meta_virt(root):
    """A stand-in meta-virtualization: its collection, priority and the two vcontainer scripts."""
    layer = os.path.join(str(root), "meta-virtualization")
    files = os.path.join(layer, "recipes-containers", "vcontainer", "files")
    os.makedirs(os.path.join(layer, "conf"), exist_ok=True)
    os.makedirs(files, exist_ok=True)
    with open(os.path.join(layer, "conf", "layer.conf"), "w") as f:
        f.write('BBPATH .= ":${LAYERDIR}"\n'
                'BBFILE_COLLECTIONS += "virtualization-layer"\n'
                'BBFILE_PATTERN_virtualization-layer := "^${LAYERDIR}/"\n'
                'BBFILE_PRIORITY_virtualization-layer = "%d"\n'
                'LAYERSERIES_COMPAT_virtualization-layer = "${STUB_SERIES}"\n' % META_VIRT_PRIORITY)
    scripts = {
        "vxn-init.sh": "#!/bin/sh\n# test stand-in for vxn's init\n. /vcontainer-init-common.sh\n",
        "vcontainer-init-common.sh": "#!/bin/sh\n# test stand-in for the shared init code\n",
    }
    for name, text in scripts.items():
        with open(os.path.join(files, name), "w") as f:
            f.write(text)
    return layer


@pytest.fixture
def meta_virt(tmp_path):
    return make_meta_virt(tmp_path)


class Recorder:
    """A BitBake UI handler (the object the server sends events to) plus a log handler."""

    def __init__(self):
        self.events = []
        self.records = []
        self.event = self

    def send(self, event):
        self.events.append(event)

    def of(self, name):
        return [e for e in self.events if type(e).__name__ == name]

    def progress_of(self, task):
        """TaskProgress events carry no task name: take those fired while `task` was running."""
        current, found = None, []
        for e in self.events:
            kind = type(e).__name__
            if kind == "TaskStarted":
                current = e.taskname
            elif kind in ("TaskSucceeded", "TaskFailed", "TaskFailedSilent"):
                current = None
            elif kind == "TaskProgress" and current == task:
                found.append(e)
        return found


class _ListHandler(logging.Handler):
    def __init__(self, records):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def recorder(bblib, monkeypatch):
    rec = Recorder()
    handle = bblib.event.register_UIHhandler(rec, mainui=True)
    log_handler = _ListHandler(rec.records)
    logger = logging.getLogger("BitBake")
    logger.addHandler(log_handler)
    # exec_task dup2()s over fds 0-2; pytest's capture objects have no usable fileno.
    devnull = open(os.devnull, "r")
    monkeypatch.setattr(sys, "stdin", devnull)
    yield rec
    logger.removeHandler(log_handler)
    bblib.event.unregister_UIHhandler(handle, mainui=True)
    devnull.close()


def run_task(bb, fn, d, task):
    """Run one task as bitbake-worker would; returns exec_task's status (0 = success)."""
    d.setVar("BB_FILENAME", fn)
    d.setVar("BB_CURRENT_TASK", task.replace("do_", "", 1))
    bb.parse.siggen.setup_datacache_from_datastore(fn, d)
    return bb.build.exec_task(fn, task, d)


def find_tool():
    """The built vxn-blobs: $VXN_BLOBS (scripts/test.sh sets it), else target/release."""
    candidates = [os.environ.get("VXN_BLOBS"), os.path.join(TOP, "target", "release", "vxn-blobs")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    missing("vxn-blobs is not built (set VXN_BLOBS or run cargo build --release)")
