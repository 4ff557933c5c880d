"""Builds shared between builders as a build farm shares them, with BitBake's own machinery: an
sstate mirror over HTTP and one hash equivalence server (docs/integration.md, "Sharing builds").

Builder A is the tier's own builds, reused as they are: test_build.py's TOPDIR (build-<series>:
the stand-in layers, the vruntime multiconfig) and test_real_layers.py's build-real-<series>
(the real layers, meta-virtualization's vxn bbappended), both on SSTATE_DIR sstate-<series>.
Builder B is two fresh TOPDIRs in build-sharing/ (b-standin, b-real) with the same
configurations, each with an SSTATE_DIR and TMPDIR of its own, empty at first; its layers come
from another copy of the checkout (other paths than A's), it uses one thread where A uses every
core (VXN_JOBS), and its SSTATE_MIRRORS is A's SSTATE_DIR served over HTTP.

Both builders use one bitbake-hashserv from the BitBake snapshot, with a database of its own:
a copy of the one A's builds so far wrote through BitBake's local ("auto") server, so that the
farm's server knows what A built before the farm existed, as a builder that joins a farm brings
its history along. Each server runs as the build user, bound to 127.0.0.1 on a port the kernel
picks, and is stopped when the module ends, whatever happened.
"""

import contextlib
import fnmatch
import glob
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.parse

import pytest

import oetier
import reallayers
from test_build import BASE_CONF, MC_X86, RECIPE, deployed, record, sha256, the_set, vxn_tasks
from test_faults import damage

# B's thread count; A's VXN_JOBS is the default, every core.
B_JOBS = 'VXN_JOBS = "1"\n'
# A change on A that changes do_compile's and do_deploy's signatures but not the blobs: what the
# boot check does with a finding. For vxn-initramfs-create alone: vxn's bbappend reads VXN_CHECK
# too, and a change there would rebuild vxn for its own sake.
CHECK_CHANGE = 'VXN_CHECK:pn-vxn-initramfs-create = "error"\n'
# What the mirror is asked for when B restores vxn-initramfs-create's deploy.
DEPLOY_OBJECT = "sstate:%s:*_deploy.tar.zst" % RECIPE
SUMMARY = re.compile(r"Sstate summary: Wanted (\d+) Local (\d+) Mirrors (\d+) Missed (\d+) Current (\d+)")


# -- the servers -----------------------------------------------------------------------------

def listening(pgid):
    """(address, port) of every TCP socket listening in a process of process group `pgid`,
    from /proc: IPv4 addresses dotted, IPv6 ones as /proc/net/tcp6 writes them."""
    inodes = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            for fd in os.listdir("/proc/%s/fd" % entry):
                link = os.readlink("/proc/%s/fd/%s" % (entry, fd))
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                address, port = fields[1].split(":")
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                    continue
                if len(address) == 8:
                    address = ".".join(str(b) for b in reversed(bytes.fromhex(address)))
                found.append((address, int(port, 16)))
    return found


class Server:
    """A server this module started as the build user, in a session of its own (so that stop()
    ends runuser and all it started), its output in a file; ready once `ready` (a pattern
    whose group 1 is the port) appears there."""

    def __init__(self, tier, name, argv, log, ready):
        self.name = name
        self.log = log
        self.proc = tier.start_as_user(argv, log, session=True)
        deadline = time.time() + 120
        while True:
            m = re.search(ready, self.output())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                pytest.fail("%s did not start (exit %s):\n%s" % (name, self.proc.returncode, self.output()))
            time.sleep(0.05)
        where = listening(self.proc.pid)
        assert where and all(a == "127.0.0.1" for a, _ in where), "%s listens on %s" % (name, where)
        assert ("127.0.0.1", self.port) in where, (name, self.port, where)
        oetier.log("sharing: %s listens on 127.0.0.1:%d only" % (name, self.port))

    def output(self):
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self):
        """SIGTERM to the whole process group, SIGKILL to what is left of it after 30 s."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def requests(self, method):
        """The paths http.server logged answering `method` requests, with their status."""
        return [(urllib.parse.unquote(path), int(status)) for m, path, status in
                re.findall(r'"(GET|HEAD) (\S+) HTTP/[\d.]+" (\d+)', self.output()) if m == method]


def database(path):
    """A hash server's SQLite database, opened read-only (its server may be writing it)."""
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True)


class Farm:
    """The farm's servers and builder B's copy of the checkout, in build-sharing/."""

    def __init__(self, tier, series):
        self.tier = tier
        self.series = series
        self.root = os.path.join(tier.work, "build-sharing")
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root)
        # B's layers: another checkout, its files as new as a fresh clone's (git writes each at
        # checkout time), so that nothing of B's may depend on A's file times.
        self.checkout = os.path.join(self.root, "checkout")
        shutil.copytree(tier.checkout, self.checkout, symlinks=True)
        for root, _, files in os.walk(self.checkout):
            for name in files:
                os.utime(os.path.join(root, name), follow_symlinks=False)
        # A's SSTATE_DIR, served to B, and its hash server's database (BB_HASHSERVE_DB_DIR).
        self.a_sstate = os.path.join(tier.work, "sstate-" + series.name)
        self.db = os.path.join(self.root, "hashserv.db")
        a_db = os.path.join(self.a_sstate, "hashserv.db")
        if os.path.exists(a_db):
            with contextlib.closing(database(a_db)) as src, contextlib.closing(sqlite3.connect(self.db)) as dst:
                src.backup(dst)
        tier._give_to_user(self.root)
        self.servers = []
        self.hashserv = None
        self.mirror = None

    def start(self):
        self.hashserv = self._start("hashserv", [
            os.path.join(self.series.bitbake, "bin", "bitbake-hashserv"), "--bind", "127.0.0.1:0",
            "--database", self.db, "--anon-perms", "@read,@report", "--log", "DEBUG"],
            r"Listening on \('127\.0\.0\.1', (\d+)\)")
        self.serve(self.a_sstate)

    def _start(self, name, argv, ready):
        server = Server(self.tier, name, argv, os.path.join(self.root, "%s-%d.log" % (name, len(self.servers))), ready)
        self.servers.append(server)
        return server

    def serve(self, directory, stop_at=None):
        """The sstate mirror: http.server on `directory` (tests/oe/sstate_mirror.py), on the
        previous mirror's port when there was one, so that B's local.conf stays as it is."""
        port = 0
        if self.mirror:
            self.mirror.stop()
            port = self.mirror.port
        argv = ["python3", "-u", os.path.join(self.tier.checkout, "tests", "oe", "sstate_mirror.py"),
                directory, "--port", str(port)] + (["--stop-at", stop_at] if stop_at else [])
        self.mirror = self._start("mirror", argv, r"on 127\.0\.0\.1 port (\d+)")
        return self.mirror

    def conf(self, mirror=False):
        """local.conf lines of a builder of the farm; `mirror`: with A's sstate as its mirror."""
        text = ('# The build farm of tests/oe/test_sharing.py: one hash equivalence server for all.\n'
                'BB_SIGNATURE_HANDLER = "OEEquivHash"\n'
                'BB_HASHSERVE = "127.0.0.1:%d"\n'
                'SSTATE_HASHEQUIV_REPORT_TASKDATA = "1"\n' % self.hashserv.port)
        if mirror:
            text += ('SSTATE_MIRRORS = "file://.* http://127.0.0.1:%d/PATH;downloadfilename=PATH"\n'
                     '# BB_NO_NETWORK stays "1" for sources; the mirror alone may be reached, on loopback.\n'
                     'SSTATE_MIRROR_ALLOW_NETWORK = "1"\n'
                     'BB_ALLOWED_NETWORKS = "127.0.0.1"\n' % self.mirror.port)
        return text

    def deploy_reports(self):
        """(id, method, taskhash, outhash) of each output hash the server has for
        vxn-initramfs-create's do_deploy (the builders report PN and task:
        SSTATE_HASHEQUIV_REPORT_TASKDATA), oldest first."""
        with contextlib.closing(database(self.db)) as db:
            return db.execute("SELECT id, method, taskhash, outhash FROM outhashes_v2 WHERE PN = ? AND task = 'deploy' "
                              "ORDER BY id", (RECIPE,)).fetchall()

    def equivalents(self, method, outhash):
        """{taskhash: unihash} of every task hash reported with this output hash."""
        with contextlib.closing(database(self.db)) as db:
            return dict(db.execute("SELECT o.taskhash, u.unihash FROM outhashes_v2 o LEFT JOIN unihashes_v3 u "
                                   "ON u.method = o.method AND u.taskhash = o.taskhash "
                                   "WHERE o.method = ? AND o.outhash = ?", (method, outhash)).fetchall())

    def stop(self):
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="module")
def farm(tier, primary):
    f = Farm(tier, primary)
    try:
        f.start()
        yield f
    finally:
        f.stop()
    assert not any(listening(s.proc.pid) for s in f.servers), "a server of the farm still listens"
    oetier.log("sharing: the servers are stopped")


# -- the builders ----------------------------------------------------------------------------

def standin_layers(tier, checkout=None):
    return [oetier.meta_vxn(tier, checkout), oetier.standin_layer(tier, "meta-virt-standin", checkout=checkout),
            oetier.standin_layer(tier, "meta-offline-standin", checkout=checkout)]


@pytest.fixture(scope="module")
def a_standin(tier, primary, farm):
    """test_build.py's TOPDIR, its configuration as that module leaves it; put back at the end."""
    bd = oetier.BuildDir(tier, primary, "build-" + primary.name, standin_layers(tier), mask=True)
    yield bd
    bd.write_conf(BASE_CONF + MC_X86)


@pytest.fixture(scope="module")
def b_standin(tier, primary, farm):
    bd = oetier.BuildDir(tier, primary, "build-sharing/b-standin", standin_layers(tier, farm.checkout), mask=True,
                         sstate="build-sharing/sstate-b-standin")
    bd.write_conf(BASE_CONF + MC_X86 + farm.conf(mirror=True) + B_JOBS)
    return bd


@pytest.fixture(scope="module")
def a_real(tier, stack, farm):
    """build-real-<series> (test_real_layers.py), with its inputs made when this module runs
    without that one; its configuration put back at the end."""
    bd = reallayers.offline_dir(tier, stack)
    if not os.path.isdir(bd.path("demo", "inputs")):
        bd.bitbake("vxn-blobs-native")
        reallayers.make_demo_inputs(tier, bd)
    yield bd
    bd.write_conf(reallayers.offline_conf(stack))


@pytest.fixture(scope="module")
def b_real(tier, stack, farm, a_real):
    """The same configuration on B, with A's inputs by path copied (as a farm shares them)."""
    bd = reallayers.offline_dir(tier, stack, name="build-sharing/b-real", sstate="build-sharing/sstate-b-real",
                                checkout=farm.checkout)
    bd.write_conf(reallayers.offline_conf(stack) + farm.conf(mirror=True) + B_JOBS)
    shutil.copytree(a_real.path("demo", "inputs"), bd.path("demo", "inputs"))
    tier._give_to_user(bd.topdir)
    return bd


def summary(result):
    """knotty's "Sstate summary" line: Wanted, Local, Mirrors, Missed, Current."""
    m = SUMMARY.search(result.output)
    assert m, result.output[-2000:]
    return dict(zip(("wanted", "local", "mirrors", "missed", "current"), (int(g) for g in m.groups())))


def real_tasks(result, *recipes):
    """The tasks of `recipes` that ran for real: not restored from sstate, not noexec."""
    return ["%s:%s" % (t.recipe, t.task) for t in result.tasks() if t.recipe in recipes and not t.kind]


def debs(bd):
    """sha256 of each package of meta-virtualization's vxn (.deb) the TOPDIR deployed, by name."""
    found = glob.glob(bd.path("tmp", "deploy", "deb", "qemux86_64", "vxn[_-]*.deb"))
    return {os.path.basename(p): sha256(p) for p in found}


def deployed_set(bd):
    return the_set(bd) if os.path.isdir(deployed(bd)) else {}


# -- the scenarios ---------------------------------------------------------------------------

def test_b_restores_the_deploy_from_the_mirror_and_compiles_nothing(tier, farm, a_standin, b_standin):
    """A's deploy, restored on B from the mirror: no do_compile of any recipe, no
    vxn-blobs-native at all (B needs no tool), the same bytes as A's; B's other VXN_JOBS and
    layer paths change no signature."""
    had = deployed_set(a_standin)
    a_standin.write_conf(BASE_CONF + MC_X86 + farm.conf())
    a = a_standin.bitbake(RECIPE)
    if had:  # The farm's server knows A's builds: nothing of the recipe runs again on A.
        assert vxn_tasks(a) == [], vxn_tasks(a)
        assert the_set(a_standin) == had
    b = b_standin.bitbake(RECIPE)
    record(tier, "builder B: empty TMPDIR and SSTATE_DIR, A's sstate over HTTP, the farm's hash server", b, vxn_tasks(b))
    oetier.log("sharing: B restored %s" % summary(b))
    assert not b.warnings(), "\n".join(b.warnings())
    assert vxn_tasks(b) == ["do_deploy_setscene"], vxn_tasks(b)
    assert [t for t in b.tasks() if t.task == "do_compile"] == []
    assert [t for t in b.tasks() if t.recipe == "vxn-blobs-native"] == []
    s = summary(b)
    assert s["local"] == 0 and s["missed"] == 0 and s["mirrors"] == s["wanted"] > 0, s
    fetched = [p for p, status in farm.mirror.requests("GET") if status == 200]
    assert any(fnmatch.fnmatch(os.path.basename(p), DEPLOY_OBJECT) for p in fetched), fetched
    assert not [p for p in fetched if "sstate:vxn-blobs-native:" in p], fetched
    assert the_set(b_standin) == the_set(a_standin)


def test_b_restores_the_dom0_packages_from_the_mirror(tier, farm, stack, a_real, b_real):
    """With the real layers: vxn-initramfs-create's deploy and meta-virtualization's vxn, its
    packages, restored on B; no task of either recipe runs for real, and the deploy and every
    .deb are A's, byte for byte."""
    had = debs(a_real)
    a_real.write_conf(reallayers.offline_conf(stack) + farm.conf())
    a = a_real.bitbake(RECIPE, "vxn")
    if had:  # What test_real_layers.py built: the recipe's own tasks stay done on A.
        assert [t for t in real_tasks(a, RECIPE, "vxn") if t.split(":")[1] in
                ("do_compile", "do_deploy", "do_install", "do_package")] == [], real_tasks(a, RECIPE, "vxn")
    b = b_real.bitbake(RECIPE, "vxn")
    record(tier, "builder B, real layers: `bitbake vxn-initramfs-create vxn`, empty TMPDIR and SSTATE_DIR",
           b, vxn_tasks(b))
    oetier.log("sharing: B restored %s; vxn: %s" % (summary(b), b.ran("vxn")))
    assert not b.warnings(), "\n".join(b.warnings())
    assert real_tasks(b, RECIPE, "vxn", "vxn-blobs-native") == []
    assert "do_deploy_setscene" in b.ran(RECIPE)
    for task in ("do_package_write_deb_setscene", "do_packagedata_setscene", "do_package_qa_setscene"):
        assert task in b.ran("vxn"), (task, b.ran("vxn"))
    s = summary(b)
    assert s["local"] == 0 and s["missed"] == 0, s
    assert the_set(b_real) == the_set(a_real)
    packages = debs(a_real)
    assert any(name.startswith("vxn_") for name in packages), packages
    assert debs(b_real) == packages


def test_hash_equivalence_a_rebuilds_the_blobs_alone_and_b_runs_nothing(tier, farm, stack, a_real, b_real):
    """A change of do_compile's signature that changes no blob: A runs do_compile and do_deploy,
    the server finds the output hash it already knew and gives A's deploy its former unihash,
    so vxn is restored from sstate, not rebuilt; then B, with the same change, runs nothing."""
    before = farm.deploy_reports()
    a_real.write_conf(reallayers.offline_conf(stack) + farm.conf() + CHECK_CHANGE)
    a = a_real.bitbake(RECIPE, "vxn")
    record(tier, "builder A, real layers: VXN_CHECK of vxn-initramfs-create changed (same blobs)", a, vxn_tasks(a))
    oetier.log("sharing: A ran %s; vxn: %s" % (vxn_tasks(a), a.ran("vxn")))
    assert vxn_tasks(a) == ["do_compile", "do_deploy"], vxn_tasks(a)
    assert real_tasks(a, "vxn") == [], real_tasks(a, "vxn")
    for task in ("do_package_write_deb_setscene", "do_packagedata_setscene"):
        assert task in a.ran("vxn"), (task, a.ran("vxn"))
    new = [r for r in farm.deploy_reports() if r not in before]
    assert len(new) == 1, new
    _, method, taskhash, outhash = new[0]
    equivalent = farm.equivalents(method, outhash)
    oetier.log("sharing: the server has %d task hashes of do_deploy with output hash %s, unihashes %s"
               % (len(equivalent), outhash[:16], sorted(set(equivalent.values()))))
    assert len(equivalent) >= 2 and len(set(equivalent.values())) == 1, equivalent
    assert equivalent[taskhash] != taskhash, "A's new do_deploy kept a unihash of its own"

    b_real.write_conf(reallayers.offline_conf(stack) + farm.conf(mirror=True) + B_JOBS + CHECK_CHANGE)
    b = b_real.bitbake(RECIPE, "vxn")
    record(tier, "builder B, real layers: the same VXN_CHECK change", b, vxn_tasks(b))
    assert b.ran(RECIPE) == [] and b.ran("vxn") == [], (b.ran(RECIPE), b.ran("vxn"))
    assert not b.warnings(), "\n".join(b.warnings())


def damaged_mirror(farm):
    """A's SSTATE_DIR as a mirror (hard links, in build-sharing/) whose do_deploy objects of
    vxn-initramfs-create are corrupted: well-formed archives whose rootfs.img has other bytes
    (test_faults.damage), copies of their own so that A's stay intact."""
    mirror = os.path.join(farm.root, "mirror-damaged")
    damaged = []
    for root, _, files in os.walk(farm.a_sstate):
        for name in files:
            if not name.startswith("sstate:"):
                continue
            target = os.path.join(mirror, os.path.relpath(root, farm.a_sstate), name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if fnmatch.fnmatch(name, DEPLOY_OBJECT):
                shutil.copyfile(os.path.join(root, name), target)
                damage(target, "corrupted")
                damaged.append(name)
            else:
                os.link(os.path.join(root, name), target)
    farm.tier._give_to_user(mirror)
    assert damaged
    return mirror


def spec_jobs(bd):
    (path,) = glob.glob(bd.path("tmp", "work", "qemux86_64-oe-linux", RECIPE, "*", "temp", "vxn-blobs-spec.json"))
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("jobs")


def test_a_damaged_object_on_the_mirror_is_built_instead(tier, farm, a_standin, b_standin):
    """The mirror serves a corrupted do_deploy object: meta-vxn's check fails
    do_deploy_setscene, BitBake takes vxn-blobs-native from the mirror and runs do_compile and
    do_deploy, and B deploys A's bytes, made with one thread where A used every core."""
    farm.serve(damaged_mirror(farm))
    b_standin.bitbake("-c", "cleansstate", RECIPE)
    b = b_standin.bitbake(RECIPE)
    record(tier, "builder B: the mirror's do_deploy object corrupted", b, vxn_tasks(b))
    assert vxn_tasks(b) == ["do_deploy_setscene", "do_compile", "do_deploy"], vxn_tasks(b)
    assert any("rootfs.img does not match SHA256SUMS" in w for w in b.lines("WARNING:")), b.output[-3000:]
    assert "do_populate_sysroot_setscene" in b.ran("vxn-blobs-native")
    assert "do_compile" not in b.ran("vxn-blobs-native")
    assert spec_jobs(b_standin) == 1
    assert the_set(b_standin) == the_set(a_standin)


def test_the_mirror_going_away_mid_download_is_built_instead(tier, farm, a_standin, b_standin):
    """The mirror's server stops while it sends the do_deploy object BitBake found there: the
    download fails, BitBake runs do_compile and do_deploy, and B deploys A's bytes."""
    b_standin.bitbake("-c", "cleansstate", RECIPE)
    mirror = farm.serve(farm.a_sstate, stop_at=DEPLOY_OBJECT)
    b = b_standin.bitbake(RECIPE, check=False)
    record(tier, "builder B: the mirror stopped while sending the do_deploy object", b, vxn_tasks(b))
    assert mirror.proc.wait(timeout=60) == 0 and "stopped while sending" in mirror.output(), mirror.output()
    assert not listening(mirror.proc.pid)
    assert vxn_tasks(b) == ["do_deploy_setscene", "do_compile", "do_deploy"], vxn_tasks(b)
    assert re.search(r"^NOTE: Tasks Summary: Attempted \d+ tasks of which \d+ didn't need to be rerun and "
                     r"all succeeded\.$", b.output, re.M), b.output[-3000:]
    # BitBake's fetcher logs each download the server's end cut short as an ERROR (the
    # deploy's, and any other in flight then), which makes knotty exit 1 although every task
    # succeeded (docs/integration.md, "Sharing builds"): those errors only.
    errors = b.lines("ERROR:")
    cut = [e for e in errors
           if re.match(r"ERROR: \S+ do_\w+_setscene: Fetcher failure: Unable to find file file://\S+/sstate:", e)]
    assert b.returncode == 0 or (cut == errors and any("%s-1.0-r0 do_deploy_setscene" % RECIPE in e for e in cut)), \
        b.output[-3000:]
    assert the_set(b_standin) == the_set(a_standin)
