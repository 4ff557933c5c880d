"""The real-BitBake tier: runs `bitbake` with OE-core's own classes on meta-vxn, offline.

(Helpers for tests/oe; conftest.py turns them into fixtures. A module name of its own, so that
another suite's conftest can never shadow it.)

Where OE-core and BitBake come from (docs/testing.md, "The real-BitBake tier"):
  VXN_OE_CORE=<dir|tarball> [VXN_BITBAKE=<dir|tarball>]  one series: a poky or OE-core checkout
      (BitBake defaults to its bitbake/ directory) or `git archive` snapshots of both;
  VXN_OE_SNAPSHOTS=<dir>  every openembedded-core-<branch>-*.tar.gz in it, each with the
      bitbake-*.tar.gz it needs (what .ci/run uses: ../shared/oe);
  VXN_OE_SERIES="wrynose scarthgap"  only these series; VXN_OE_WORK (default
      /var/tmp/vxn-oe-tier) the work directory; VXN_OE_USER the user bitbake runs as when the
      tier is started as root (OE's sanity checks refuse root; default vxnbuild, created if
      missing).

The build is offline: BB_NO_NETWORK = "1", the crates of Cargo.lock placed in DL_DIR from cargo's
own download cache, the host's rustc/cargo through ASSUME_PROVIDED and HOSTTOOLS (rust-native
cannot be built without network), and two stand-in layers of the tier's own (layers/): one for
meta-virtualization, one for the host's pseudo.
"""

import dataclasses
import glob
import itertools
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
IN_CI = os.environ.get("CI") == "true"

ENABLE_HINT = ("the real-BitBake tier needs OE-core and BitBake: set VXN_OE_CORE=<poky or OE-core "
               "checkout or snapshot tarball> (and VXN_BITBAKE=<bitbake checkout or tarball> if it "
               "has no bitbake/), or VXN_OE_SNAPSHOTS=<directory of snapshot tarballs>; see "
               "docs/testing.md")

# What OE-core cannot build offline (their sources are downloads), provided by the host instead:
# rust and the tools of patching and packaging, which HOSTTOOLS links in (rustc, cargo here; the
# rest are in OE-core's own HOSTTOOLS). Packaging a recipe without ELF files, as the Dom0 blobs
# are, runs none of binutils-cross, rpm (file dependencies) or dwarfsrcfiles (debug split).
ASSUME_PROVIDED = ("rust-native cargo-native python3-native quilt-native patch-replacement-native "
                   "binutils-cross-x86_64 binutils-cross-aarch64 rpm-native dwarfsrcfiles-native "
                   "dpkg-native")
HOSTTOOLS = "rustc cargo dpkg-deb"
# deb, because the host's dpkg-deb can write it (ipk would need opkg-utils-native).
PACKAGE_CLASSES = "package_deb"


def missing(what):
    """Skip for a missing requirement, or fail under CI=true, where nothing may be missing."""
    if IN_CI:
        pytest.fail("%s (CI=true: required)" % what)
    pytest.skip(what)


def log(message):
    """A progress line that pytest -s (tests/oe/run) shows as it happens."""
    print("oe-tier: %s" % message, flush=True)


@dataclasses.dataclass
class Series:
    """One OE-core release line with the BitBake it needs."""
    name: str       # the last of OE-core's LAYERSERIES_CORENAMES: "wrynose", "blacksail" (master)
    oe_core: str    # directory holding meta/ and oe-init-build-env
    bitbake: str    # directory holding bin/bitbake


def _read_var(path, var):
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r'\s*%s\s*\??=\s*"([^"]*)"' % re.escape(var), line)
            if m:
                return m.group(1)
    return None


def _unpack(source, into):
    """A directory as it is, or a tarball unpacked once under `into` (keyed by its name)."""
    if os.path.isdir(source):
        return os.path.abspath(source)
    name = os.path.basename(source)
    for suffix in (".tar.gz", ".tgz", ".tar.xz", ".tar.zst", ".tar"):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
    dest = os.path.join(into, name)
    done = dest + ".unpacked"
    if not os.path.exists(done):
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        with tarfile.open(source) as t:
            t.extractall(dest, filter="tar") if hasattr(tarfile, "data_filter") else t.extractall(dest)
        open(done, "w").close()
    entries = os.listdir(dest)
    return os.path.join(dest, entries[0]) if len(entries) == 1 else dest


def _series_of(oe_core):
    names = _read_var(os.path.join(oe_core, "meta", "conf", "layer.conf"), "LAYERSERIES_CORENAMES")
    if not names:
        raise RuntimeError("%s has no LAYERSERIES_CORENAMES in meta/conf/layer.conf: not an OE-core" % oe_core)
    # The newest name is last: master lists "wrynose blacksail" while blacksail is in the making.
    return names.split()[-1]


def _pick_bitbake(oe_tarball, bitbake_tarballs, sources):
    """The BitBake a snapshot of OE-core needs: master goes with master, a release branch with
    the BitBake series its sanity.conf asks for (BB_MIN_VERSION's major.minor)."""
    branch = re.match(r"openembedded-core-(.+?)-[0-9a-f]+\.tar", os.path.basename(oe_tarball)).group(1)
    if branch == "master":
        wanted = "master"
    else:
        oe = _unpack(oe_tarball, sources)
        wanted = ".".join(_read_var(os.path.join(oe, "meta", "conf", "sanity.conf"), "BB_MIN_VERSION").split(".")[:2])
    for bb in bitbake_tarballs:
        if re.match(r"bitbake-%s-[0-9a-f]+\.tar" % re.escape(wanted), os.path.basename(bb)):
            return bb
    raise RuntimeError("no bitbake-%s-*.tar.gz beside %s" % (wanted, oe_tarball))


def discover_series(sources):
    """The series to test, from the environment; [] when nothing is configured."""
    oe_core = os.environ.get("VXN_OE_CORE")
    found = []
    if oe_core:
        oe = _unpack(oe_core, sources)
        bitbake = os.environ.get("VXN_BITBAKE")
        bb = _unpack(bitbake, sources) if bitbake else os.path.join(oe, "bitbake")
        found.append(Series(_series_of(oe), oe, bb))
    elif os.environ.get("VXN_OE_SNAPSHOTS"):
        snapshots = os.environ["VXN_OE_SNAPSHOTS"]
        bitbakes = sorted(glob.glob(os.path.join(snapshots, "bitbake-*.tar*")))
        for tarball in sorted(glob.glob(os.path.join(snapshots, "openembedded-core-*.tar*"))):
            oe = _unpack(tarball, sources)
            bb = _unpack(_pick_bitbake(tarball, bitbakes, sources), sources)
            found.append(Series(_series_of(oe), oe, bb))
    wanted = os.environ.get("VXN_OE_SERIES", "").split()
    for s in found:
        if not os.path.isfile(os.path.join(s.bitbake, "bin", "bitbake")):
            raise RuntimeError("%s has no bin/bitbake: set VXN_BITBAKE" % s.bitbake)
    return [s for s in found if not wanted or s.name in wanted]


# knotty's log line for every task it starts: "NOTE: Running [setscene |noexec ]task N of M (TID)",
# TID being [mc:<mc>:][virtual:native:]<recipe file>:<task>.
TASK_LINE = re.compile(r"^NOTE: Running (setscene |noexec )?task \d+ of \d+ \((.+):(do_\w+)\)$", re.M)


@dataclasses.dataclass(frozen=True)
class Task:
    mc: str         # "" for the default configuration
    recipe: str     # PN, e.g. "vxn-blobs-native"
    task: str       # e.g. "do_compile", "do_deploy_setscene"
    kind: str       # "", "setscene" or "noexec"


@dataclasses.dataclass
class Result:
    command: str
    returncode: int
    output: str
    seconds: float

    def lines(self, prefix):
        return [l for l in self.output.splitlines() if l.startswith(prefix)]

    def tasks(self):
        """Every task knotty reported starting, in order."""
        found = []
        for m in TASK_LINE.finditer(self.output):
            tid = m.group(2)
            mc = ""
            if tid.startswith("mc:"):
                _, mc, tid = tid.split(":", 2)
            native = tid.startswith("virtual:native:")
            recipe = os.path.basename(tid)[:-len(".bb")].split("_")[0]
            found.append(Task(mc, recipe + ("-native" if native else ""), m.group(3), (m.group(1) or "").strip()))
        return found

    def ran(self, recipe, mc=""):
        """The tasks of `recipe` that really executed (setscene ones included, noexec not)."""
        return [t.task for t in self.tasks() if t.recipe == recipe and t.mc == mc and t.kind != "noexec"]

    def index(self, recipe, task, mc=""):
        for i, t in enumerate(self.tasks()):
            if (t.recipe, t.task, t.mc) == (recipe, task, mc):
                return i
        raise AssertionError("%s:%s (mc %r) did not run in `%s`" % (recipe, task, mc, self.command))

    def warnings(self):
        return [l for l in self.output.splitlines() if l.startswith(("WARNING:", "ERROR:"))]


class Tier:
    """The machine-wide part: work directory, build user, host rust, crates, a copy of the
    checkout the build user can read."""

    def __init__(self):
        # Every BitBake command gets SIGINT as a terminal gives it: the default. A suite started
        # as a background job of a shell without job control (`sh -c '...' &`) ignores SIGINT,
        # Python then installs no handler of its own, and the ignore passed down to every
        # bitbake: knotty never saw the Ctrl-C of test_faults.py. With a handler here, each
        # child starts with the default again (exec resets handled signals, not ignored ones).
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self.work = os.path.abspath(os.environ.get("VXN_OE_WORK", "/var/tmp/vxn-oe-tier"))
        self.sources = os.path.join(self.work, "sources")
        os.makedirs(self.sources, exist_ok=True)
        self.series = discover_series(self.sources)
        self.as_root = os.geteuid() == 0
        self.user = os.environ.get("VXN_OE_USER", "vxnbuild") if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        self.downloads = os.path.join(self.work, "downloads")
        self.checkout = os.path.join(self.work, "vxn-blobs")
        self.rust_bin = None
        self.prepared = False
        # yocto-check-layer runs started in the background, by name ("real": reallayers.py).
        self.check_layer_runs = {}

    def series_named(self, name):
        for s in self.series:
            if s.name == name:
                return s
        return None

    # -- preparation -------------------------------------------------------------------------

    def prepare(self):
        if self.prepared:
            return
        t0 = time.time()
        self._ensure_user()
        # A fresh start for everything a run builds; sources, crates and the rust copy stay.
        # (VXN_OE_KEEP=1 keeps the builds too, for working on the tier itself: tests that
        # expect a first build then see none. The rebuild table is tests/oe/run's to start.)
        for name in os.listdir(self.work) if os.environ.get("VXN_OE_KEEP") != "1" else []:
            if name.startswith(("build-", "check-", "sstate")) or name == "vxn-blobs":
                shutil.rmtree(os.path.join(self.work, name))
            elif name == "logs":
                shutil.rmtree(os.path.join(self.work, name))
        self._copy_checkout()
        self._find_rust()
        self._place_crates()
        self._give_to_user(self.work, skip=("rust",))
        self.prepared = True
        log("prepared %s in %.0f s (build user %s, rust %s)" % (self.work, time.time() - t0, self.user, self.rust_bin))

    def _ensure_user(self):
        if not self.as_root:
            return
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", self.user], check=True)
            log("created the build user %s" % self.user)

    def _give_to_user(self, path, skip=()):
        if not self.as_root:
            return
        pw = pwd.getpwnam(self.user)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        for entry in os.listdir(path):
            if entry in skip:
                continue
            full = os.path.join(path, entry)
            try:
                os.lchown(full, pw.pw_uid, pw.pw_gid)
            except FileNotFoundError:
                continue  # a socket the previous command's server removed as it ended
            if os.path.isdir(full) and not os.path.islink(full):
                subprocess.run(["chown", "-R", "-h", "%d:%d" % (pw.pw_uid, pw.pw_gid), full], check=True)

    def _copy_checkout(self):
        """The files of this checkout (tracked or new, not ignored), so that the layer's
        file:// entries, devtool and the build user see the tree as committed plus local edits."""
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=TOP, capture_output=True)
        if listed.returncode == 0:
            files = [f for f in listed.stdout.decode().split("\0") if f and os.path.lexists(os.path.join(TOP, f))]
        else:
            files = []
            for root, dirs, names in os.walk(TOP):
                dirs[:] = [d for d in dirs if d not in (".git", "target", ".venv", "__pycache__")]
                files += [os.path.relpath(os.path.join(root, n), TOP) for n in names]
        for f in files:
            dest = os.path.join(self.checkout, f)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy2(os.path.join(TOP, f), dest, follow_symlinks=False)

    def _find_rust(self):
        """The host's rustc and cargo, somewhere the build user can run them: a root-only
        toolchain (rustup under /root) is mirrored into the work directory with hardlinks."""
        rustc = shutil.which("rustc")
        if not rustc or not shutil.which("cargo"):
            missing("rustc and cargo are needed on PATH")
        sysroot = subprocess.run([rustc, "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
        bindir = os.path.join(sysroot, "bin")
        if self._user_can_run(os.path.join(bindir, "cargo")):
            self.rust_bin = bindir
            return
        mirror = os.path.join(self.work, "rust")
        stamp = mirror + ".from"
        if not (os.path.exists(stamp) and open(stamp).read() == sysroot):
            shutil.rmtree(mirror, ignore_errors=True)
            # Hardlinks share ownership with the originals: never chown inside the mirror.
            if subprocess.run(["cp", "-al", sysroot, mirror]).returncode != 0:
                shutil.rmtree(mirror, ignore_errors=True)
                subprocess.run(["cp", "-a", sysroot, mirror], check=True)
            with open(stamp, "w") as f:
                f.write(sysroot)
        self.rust_bin = os.path.join(mirror, "bin")
        if not self._user_can_run(os.path.join(self.rust_bin, "cargo")):
            missing("the build user %s cannot run %s" % (self.user, self.rust_bin))

    def _user_can_run(self, path):
        return self.run_as_user(["test", "-x", path]).returncode == 0 if self.as_root else os.access(path, os.X_OK)

    def _place_crates(self):
        """Every crate of Cargo.lock in DL_DIR as NAME-VERSION.crate, where OE's crate fetcher
        looks, taken from cargo's own download cache (`cargo fetch` fills it)."""
        os.makedirs(self.downloads, exist_ok=True)
        cargo_home = os.path.join(self.work, "cargo-home")
        env = dict(os.environ, CARGO_HOME=cargo_home)
        fetched = subprocess.run(["cargo", "fetch", "--locked", "--manifest-path",
                                  os.path.join(self.checkout, "Cargo.toml")],
                                 env=env, capture_output=True, text=True)
        caches = glob.glob(os.path.join(cargo_home, "registry", "cache", "*"))
        if fetched.returncode != 0:
            log("cargo fetch failed (%s); using ~/.cargo's cache" % fetched.stderr.strip().splitlines()[-1:])
            caches += glob.glob(os.path.expanduser("~/.cargo/registry/cache/*"))
        wanted = set()
        with open(os.path.join(self.checkout, "Cargo.lock"), encoding="utf-8") as f:
            lock = f.read()
        for name, version in re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"\nsource = "registry\+', lock):
            wanted.add("%s-%s.crate" % (name, version))
        for cache in caches:
            for crate in os.listdir(cache):
                if crate in wanted and not os.path.exists(os.path.join(self.downloads, crate)):
                    shutil.copy(os.path.join(cache, crate), self.downloads)
        absent = sorted(c for c in wanted if not os.path.exists(os.path.join(self.downloads, c)))
        if absent:
            missing("crates not in cargo's cache (run `cargo fetch --locked` once with network): %s" % ", ".join(absent[:5]))

    # -- running -----------------------------------------------------------------------------

    def user_env(self):
        home = pwd.getpwnam(self.user).pw_dir if self.as_root else os.environ.get("HOME", self.work)
        return {
            "HOME": home,
            "USER": self.user,
            "LOGNAME": self.user,
            "PATH": "%s:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" % (self.rust_bin or "/usr/bin"),
            "LANG": "en_US.UTF-8",
            "SHELL": "/bin/sh",
            "TERM": "dumb",
            # OE-core joins sets into values at parse time (oe.utils.set_intersect for
            # COMBINED_FEATURES), whose order follows Python's hash seed; a fixed seed keeps two
            # commands in one TOPDIR from disagreeing on such a value. (The full reparse seen on
            # master after the first command has another cause: docs/testing.md, "A second parse in a
            # fresh TOPDIR".)
            "PYTHONHASHSEED": "0",
        }

    def _as_user(self, argv):
        env = self.user_env()
        if self.as_root:
            return ["runuser", "-u", self.user, "--", "env", "-i"] + ["%s=%s" % kv for kv in env.items()] + list(argv), None
        return list(argv), env

    def run_as_user(self, argv, cwd=None, timeout=None):
        argv, env = self._as_user(argv)
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)

    def start_as_user(self, argv, output, session=False):
        """argv started as the build user, its stdout and stderr going to the file `output`
        (a file, not a pipe: nobody reads a pipe while a background build runs). `session`:
        in a session and process group of its own, which os.killpg can end whole (runuser and
        what it started)."""
        argv, env = self._as_user(argv)
        with open(output, "w") as out:
            return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=session)


# Numbers the logs of BitBake commands (work/logs/<topdir>-N.log), kept for a look afterwards.
_RUNS = itertools.count(1)

# A terminal's control sequences, removed from what knotty prints on a pty.
ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][0-9A-B]|[=>])")


class BuildDir:
    """A TOPDIR for one series: conf/bblayers.conf and conf/local.conf written by the tier,
    bitbake run in it through OE-core's oe-init-build-env as the build user.

    `mask` leaves OE-core's recipes out of the parse (BBMASK), as the builds need none of them:
    a full parse takes minutes on two cores, a masked one seconds, so a dozen consecutive builds
    fit in CI. The classes, bitbake.conf and the sanity checks are OE-core's all the same; a
    recipe the build did need would fail it ("Nothing PROVIDES"), not pass it by accident. The
    full parse is the real stack's (test_real_layers.py: all of OE-core and the layers beside)."""

    def __init__(self, tier, series, name, layers, mask=False, sstate=None):
        self.tier = tier
        self.series = series
        self.topdir = os.path.join(tier.work, name)
        self.layers = [os.path.join(series.oe_core, "meta")] + list(layers)
        self.mask = mask
        # Its own SSTATE_DIR (and with it the hash equivalence database) when it runs beside
        # another build of the same series.
        self.sstate = os.path.join(tier.work, sstate or "sstate-" + series.name)
        os.makedirs(os.path.join(self.topdir, "conf"), exist_ok=True)
        self.write_conf()

    def write_conf(self, extra=""):
        """Rewrites both conf files; `extra` is appended to local.conf."""
        with open(os.path.join(self.topdir, "conf", "bblayers.conf"), "w") as f:
            f.write('# Written by tests/oe (the real-BitBake tier of vxn-blobs).\n'
                    'POKY_BBLAYERS_CONF_VERSION = "2"\nBBPATH = "${TOPDIR}"\nBBFILES ?= ""\n'
                    'BBLAYERS ?= " \\\n%s"\n' % "".join("    %s \\\n" % l for l in self.layers))
        mask = ('# OE-core\'s recipes are not needed by these builds (see tests/oe/oetier.py).\n'
                'BBMASK += "^%s/meta/recipes-(?!core/meta/)"\n' % re.escape(self.series.oe_core)
                if self.mask else "")
        with open(os.path.join(self.topdir, "conf", "local.conf"), "w") as f:
            f.write('# Written by tests/oe (the real-BitBake tier of vxn-blobs): an offline build.\n'
                    'MACHINE ??= "qemux86-64"\n'
                    'DL_DIR = "%s"\n'
                    'SSTATE_DIR = "%s"\n'
                    'BB_HASHSERVE_DB_DIR = "${SSTATE_DIR}"\n'
                    'BB_NO_NETWORK = "1"\n'
                    '# What cannot be built without network comes from the host: rust, through\n'
                    '# HOSTTOOLS; uninative (a download) is not used.\n'
                    'ASSUME_PROVIDED += "%s"\n'
                    'HOSTTOOLS += "%s"\n'
                    'INHERIT:remove = "uninative"\n'
                    'PACKAGE_CLASSES = "%s"\n'
                    'BB_NUMBER_THREADS ?= "2"\n'
                    'PARALLEL_MAKE ?= "-j 2"\n'
                    'CONF_VERSION = "2"\n'
                    '%s%s\n' % (self.tier.downloads, self.sstate,
                                 ASSUME_PROVIDED, HOSTTOOLS, PACKAGE_CLASSES, mask, extra))
        self.tier._give_to_user(self.topdir)

    def bitbake(self, *args, tool="bitbake", check=True, tty=False, timeout=3600):
        """Runs a BitBake command (bitbake, bitbake-getvar, yocto-check-layer, devtool...) as a
        user would after sourcing oe-init-build-env; returns its Result, failing the test on a
        non-zero exit when `check`. `tty` runs it on a pseudo-terminal, where knotty draws its
        interactive display (progress bars)."""
        return self.start(*args, tool=tool, tty=tty).wait(check=check, timeout=timeout)

    def start(self, *args, tool="bitbake", tty=False):
        """The same command started in the background: wait() on what this returns."""
        s = self.series
        command = " ".join([tool] + [shlex.quote(a) for a in args])
        if tty:
            command = "TERM=xterm script -qec %s /dev/null" % shlex.quote("stty cols 200 rows 50; " + command)
        script = ("cd %s && BITBAKEDIR=%s . ./oe-init-build-env %s >/dev/null && "
                  'export BB_ENV_PASSTHROUGH_ADDITIONS="$BB_ENV_PASSTHROUGH_ADDITIONS PYTHONHASHSEED" && %s 2>&1') % (
            shlex.quote(s.oe_core), shlex.quote(s.bitbake), shlex.quote(self.topdir), command)
        output = os.path.join(self.tier.work, "logs", "%s-%d.log" % (os.path.basename(self.topdir), next(_RUNS)))
        os.makedirs(os.path.dirname(output), exist_ok=True)
        return Running(self, command, self.tier.start_as_user(["bash", "-c", script], output), output)

    def path(self, *parts):
        return os.path.join(self.topdir, *parts)

    def favour(self, running, nice=-5):
        """Runs the BitBake servers of this TOPDIR at a higher priority than everything else on the
        machine until `running` ends: the background yocto-check-layer run is the critical path
        of the suite (docs/testing.md, "Where CI's time goes").

        The kernel's autogroup scheduling shares the CPU between sessions, and every BitBake
        server starts a session of its own (with its parse and signature-writing processes and
        their zstd children in it), so the priority is the autogroup's nice value
        (/proc/<server>/autogroup), set on each server as it appears in bitbake.lock. `nice`
        on the command would not reach them, and turning autogroups off to make it reach them
        slowed the signature dumps (tried: 580232b). Needs root for a negative value and
        autogroups on; otherwise this says so and does nothing."""
        try:
            with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
                enabled = f.read().strip() == "1"
        except OSError:
            enabled = False
        if not enabled or (nice < 0 and os.geteuid() != 0):
            log("%s: BitBake servers not favoured (needs %s)" % (
                os.path.basename(self.topdir), "root" if enabled else "autogroup scheduling"))
            return
        lock = self.path("bitbake.lock")

        def keep():
            done = set()
            while running.proc.poll() is None:
                try:
                    with open(lock) as f:
                        pid = int(f.read().split()[0])
                except (OSError, ValueError, IndexError):
                    pid = None
                if pid and pid not in done:
                    try:
                        with open("/proc/%d/autogroup" % pid, "w") as f:
                            f.write(str(nice))
                        done.add(pid)
                    except OSError:
                        pass  # gone, or not yet the server (the lock is written first)
                time.sleep(1)
            log("%s: %d BitBake servers ran at autogroup nice %d" % (os.path.basename(self.topdir), len(done), nice))

        threading.Thread(target=keep, daemon=True).start()


class Running:
    """A BitBake command started by BuildDir.start."""

    def __init__(self, bd, command, proc, output):
        self.bd = bd
        self.command = command
        self.proc = proc
        self.output = output
        self.t0 = time.time()
        self.result = None
        # The time it took, not the time until somebody asked: a background command (the
        # check-layer runs) is often collected long after it ended.
        self.t_end = None
        self._watch = threading.Thread(target=self._ended, daemon=True)
        self._watch.start()

    def _ended(self):
        self.proc.wait()
        self.t_end = time.time()

    def wait(self, check=True, timeout=3600):
        if self.result is None:
            self._watch.join(timeout=max(1, timeout - (time.time() - self.t0)))
            killed = ""
            if self._watch.is_alive():
                self.proc.kill()
                self._watch.join()
                killed = "\n(killed after %d s)" % timeout
            with open(self.output, encoding="utf-8", errors="replace") as f:
                out = f.read() + killed
            output = ANSI.sub("", out.replace("\r\n", "\n"))
            self.result = Result(self.command, self.proc.returncode, output, self.t_end - self.t0)
            log("%s: %s -> exit %d in %.0f s" % (self.bd.series.name, self.command,
                                                   self.result.returncode, self.result.seconds))
        r = self.result
        if check and r.returncode != 0:
            pytest.fail("%s failed (exit %d) in %s:\n%s" % (r.command, r.returncode, self.bd.topdir,
                                                          "\n".join(r.output.splitlines()[-60:])))
        return r


def meta_vxn(tier, checkout=None):
    """meta-vxn in the tier's copy of the checkout, which the build user can read (or in
    `checkout`, another copy: a second builder's)."""
    return os.path.join(checkout or tier.checkout, "meta-vxn")


def standin_layer(tier, name, *parts, checkout=None):
    """A layer of tests/oe/layers (or a path in it), in the tier's copy of the checkout, which
    the build user can read (or in `checkout`, as meta_vxn)."""
    return os.path.join(checkout or tier.checkout, "tests", "oe", "layers", name, *parts)


def check_dir(tier, series):
    """check-<series>: OE-core and meta-vxn, VXN_SCRIPTS_DIR at the stand-in's scripts so that
    the recipes are parsed, not skipped, and the documented DISTRO_FEATURES.

    Masked as the builds are: meta-vxn reaches no recipe but its own (its layer.conf sets only
    the layer's own variables, its bbappends are for meta-virtualization's recipes, its class is
    inherited by its recipes alone), so what a full parse of OE-core adds is OE-core's own
    recipes, parsed in full beside meta-vxn on wrynose by the real stack's parse and by
    yocto-check-layer's test_parse (test_real_layers.py). Masked, a series costs seconds instead
    of a minute of both cores (docs/testing.md, "What was tried to cut it")."""
    scripts = standin_layer(tier, "meta-virt-standin", "recipes-containers", "vcontainer", "files")
    # The offline stand-ins as in the builds: with OE-core's recipes masked, `bitbake -e` of a
    # recipe still resolves its dependencies, pseudo among them.
    layers = [meta_vxn(tier), standin_layer(tier, "meta-offline-standin")]
    bd = BuildDir(tier, series, "check-" + series.name, layers, mask=True, sstate="sstate-check-" + series.name)
    # A server that outlives each command by 30 s: then bitbake-getvar, `bitbake -e` and the
    # build after `bitbake -p` reuse its parse instead of parsing again, which BitBake 2.18 and
    # master do for the second command of a fresh TOPDIR when each command starts its own server
    # (docs/testing.md, "A second parse in a fresh TOPDIR").
    bd.write_conf('DISTRO_FEATURES:append = " virtualization vcontainer vxn"\n'
                  'VXN_SCRIPTS_DIR = "%s"\n'
                  'BB_SERVER_TIMEOUT = "30"\n' % scripts)
    return bd


# meta-vxn's knobs, each a variable a user may set, and so looks up.
KNOBS = ("VXN_RUNTIME", "VXN_MULTICONFIG", "VXN_BLOB_ARCH", "VXN_KERNEL_IMAGETYPE", "VXN_MC_DEPLOY_DIR",
         "VXN_INITRAMFS", "VXN_ROOTFS", "VXN_KERNEL_DIRS", "VXN_INJECT", "VXN_COMPRESSION",
         "VXN_FORCE_BUILD", "VXN_INSTALL_BLOBS", "VXN_CHECK", "VXN_SPEC")


def assert_knobs_shown(bd):
    """The knobs where a user looks them up: bitbake-getvar gives the value and the class line
    that set it, `bitbake -e` lists every knob, and the rootfs input is in the deploy of the
    default multiconfig, vruntime-x86-64."""
    r = bd.bitbake("-r", "vxn-initramfs-create", "VXN_FORCE_BUILD", tool="bitbake-getvar")
    assert 'VXN_FORCE_BUILD="0"' in r.output, r.output
    assert "classes/vxn-initramfs-create.bbclass" in r.output, r.output
    env = bd.bitbake("-e", "vxn-initramfs-create").output
    for knob in KNOBS:
        assert re.search(r"^%s=" % knob, env, re.M), knob
    assert re.search(r'^VXN_ROOTFS=".*/tmp-vruntime-x86-64/deploy/images/qemux86-64/'
                     r'vdkr-rootfs-image-qemux86-64\.rootfs\.squashfs"$', env, re.M)
    assert re.search(r'^PACKAGE_ARCH="qemux86_64"$', env, re.M)
