"""Faults under the real BitBake: a killed build, Ctrl-C, builds sharing sstate, a broken sstate
object (docs/reliability.md has the table of what was tried and the outcome).

Each scenario brings real bitbake runs into the fault, then asserts on what the next build does
and on the files everything left. The TOPDIRs are new ones of their own (build-faults-*), with the same
layers as test_build.py and the same SSTATE_DIR and DL_DIR, so they restore vxn-blobs-native and
anything else already built from sstate instead of compiling it again. Their local.conf gives
the stand-in rootfs a larger payload and a variant file of its own (STANDIN_PAYLOAD_MB,
STANDIN_VARIANT), so that do_compile's rootfs transcode lasts long enough to be caught, and each
scenario has inputs nobody built before.

A watcher polls every vxn/<arch>/ of the TOPDIRs in DEPLOY_DIR_IMAGE while the scenarios run:
whenever the directory exists, SHA256SUMS must list exactly the files beside it and each must
match (`sha256sum -c`).
"""

import io
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tarfile
import threading
import time

import pytest

import oetier
from test_build import (BASE_CONF, MC_X86, RECIPE, MC, block_sources, deployed, reference_set, sha256,
                        sstate_objects, the_set, vxn_tasks)

# The size of the variant file each scenario changes (transcoded anew; the stand-in's 6 MB
# payload is reused block by block after the first compile): a transcode of seconds on two
# cores, long enough to be caught by polling, not minutes.
FAULTS_CONF = 'STANDIN_VARIANT_MB = "10"\n'
# The stand-in rootfs's payload: STANDIN_PAYLOAD_MB (6) MiB, the same bytes in every variant, in
# 128 KiB blocks.
PAYLOAD_BLOCKS = 48
# What test_two_topdirs... leaves for the damaged-sstate test: the object and the deployed set.
SHARED = {}
# src/safe_fs.rs: the tool's temporary files start with TEMP_PREFIX, and the engine stages the
# rootfs it is writing as "." + that name + ".XXXX.partial".
TEMP_PREFIX = ".vxn-blobs-tmp-"


def is_temp(name):
    return name.startswith((TEMP_PREFIX, "." + TEMP_PREFIX))


def conf(variant, extra=""):
    return BASE_CONF + MC_X86 + FAULTS_CONF + 'STANDIN_VARIANT = "%s"\n' % variant + extra


def faults_dir(tier, series, name):
    layers = [oetier.meta_vxn(tier), oetier.standin_layer(tier, "meta-virt-standin"),
              oetier.standin_layer(tier, "meta-offline-standin")]
    return oetier.BuildDir(tier, series, "build-faults-" + name, layers, mask=True)


def say(what, t0):
    oetier.log("faults: %s (%.0f s)" % (what, time.time() - t0))


def workdir(bd):
    return bd.path("tmp", "work", "qemux86_64-oe-linux", RECIPE, "1.0")


def build_dir(bd):
    return os.path.join(workdir(bd), "build")


# -- processes -------------------------------------------------------------------------------

def _processes():
    """pid -> (ppid, argv) of every process now."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        found[int(entry)] = (int(stat[stat.rindex(b")") + 2:].split()[1]), argv)
    return found


def _is_bitbake(argv):
    return any(os.path.basename(a) in ("bitbake", "bitbake-server", "bitbake-worker") for a in argv[:2])


def bitbake_processes(bd, running):
    """Every BitBake process of one command: the UI, the server (bitbake.lock names it, it is
    daemonized) and what they started that is BitBake (workers, the forked task processes, the
    hash equivalence server); not a task's shell nor the tool it runs."""
    procs = _processes()
    roots = {running.proc.pid}
    try:
        with open(bd.path("bitbake.lock")) as f:
            roots.add(int(f.read().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    children = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in tree:
            continue
        tree.add(pid)
        todo += children.get(pid, [])
    return sorted(p for p in tree if p in procs and _is_bitbake(procs[p][1]))


def tool_pids(bd, command):
    """`vxn-blobs <command>` processes working on this TOPDIR (their spec lies under it). Reads
    cmdline alone: it is polled while a short deploy runs."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if (os.path.basename(argv[0]) == b"vxn-blobs" and argv[1:2] == [command.encode()]
                and any(a.startswith(bd.topdir.encode() + b"/") for a in argv)):
            found.append(int(entry))
    return found


def staged_sizes(directory):
    try:
        return {n: os.path.getsize(os.path.join(directory, n))
                for n in os.listdir(directory) if is_temp(n)}
    except OSError:
        return {}


def wait_for_tool(bd, running, command, growing=None, earlier=()):
    """Polls until `vxn-blobs <command>` runs for this TOPDIR (not one of the `earlier` pids,
    orphans of a killed build) and, with `growing` (a directory), a staged file of at least
    1 MiB there (the rootfs, not the small initramfs and kernel) has grown since the previous
    poll: the transcode is under way (it writes a batch of blocks at a time). Returns the staged
    size seen."""
    last = {}
    while running.proc.poll() is None:
        if set(tool_pids(bd, command)) - set(earlier):
            if growing is None:
                return 0
            sizes = staged_sizes(growing)
            grown = [size for name, size in sizes.items() if size >= 1 << 20 and size > last.get(name, size)]
            if grown:
                return grown[0]
            last = sizes
        time.sleep(0.005)
    r = running.wait(check=False)
    pytest.fail("`%s` ended (exit %d) before vxn-blobs %s was seen working:\n%s"
                % (r.command, r.returncode, command, "\n".join(r.output.splitlines()[-30:])))


def _signal(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] != b"Z"


def kill_bitbake(bd, running):
    """SIGKILL to every BitBake process of the command at once, as a CI job's timeout does:
    all are stopped first (until no new one appears), so that none reacts to another's death or
    forks meanwhile, then killed; the tool and the task's shell are left to run or die on their
    own. Returns what was killed and the orphans."""
    stopped = set()
    while True:
        pids = set(bitbake_processes(bd, running)) - stopped
        if not pids:
            break
        _signal(pids, signal.SIGSTOP)
        stopped |= pids
    _signal(stopped, signal.SIGKILL)
    running.wait(check=False)
    t0 = time.time()
    while any(_alive(p) for p in stopped) and time.time() - t0 < 30:
        time.sleep(0.05)
    return sorted(stopped), tool_pids(bd, "compile") + tool_pids(bd, "deploy")


def ui_pid(running):
    """The knotty process (bin/bitbake) of a command: where a terminal's Ctrl-C goes."""
    procs = _processes()
    todo, seen = [running.proc.pid], set()
    while todo:
        pid = todo.pop()
        seen.add(pid)
        if pid in procs and any(os.path.basename(a) == "bitbake" for a in procs[pid][1][:2]):
            return pid
        todo += [p for p, (pp, _) in procs.items() if pp == pid and p not in seen]
    pytest.fail("no bitbake UI process under pid %d" % running.proc.pid)


# knotty's answer to a first and a second Ctrl-C (bb/ui/knotty.py).
CTRL_C_ANSWERS = ("Keyboard Interrupt, closing down...", "Second Keyboard Interrupt, stopping...")


def _ignores_sigint(pid):
    """Whether process `pid` ignores SIGINT (/proc's SigIgn mask); False once it has ended."""
    try:
        with open("/proc/%d/status" % pid, encoding="utf-8") as f:
            ignored = int(re.search(r"^SigIgn:\s*([0-9a-f]+)$", f.read(), re.M).group(1), 16)
    except FileNotFoundError:
        return False
    return bool(ignored & (1 << (signal.SIGINT - 1)))


def press_ctrl_c(running, press):
    """Ctrl-C in knotty's terminal, the `press`-th (1 or 2): SIGINT to the UI, then waits for
    knotty's answer in its output (the command runs with PYTHONUNBUFFERED=1, so that it is there
    at once), so that a second press comes after the first was taken. A second press may find
    the build ended (on idle cores the transcode can end between the two): the caller sees that
    in the output."""
    answer = CTRL_C_ANSWERS[press - 1]
    if press > 1 and running.proc.poll() is not None:
        return
    ui = ui_pid(running)
    # Seen in CI runs started as `sh -c '...' &`: the ignore that oetier.Tier now undoes.
    assert not _ignores_sigint(ui), "knotty (pid %d) ignores SIGINT: inherited from how the suite was started" % ui
    _signal([ui], signal.SIGINT)
    deadline = time.time() + 60
    while time.time() < deadline and running.proc.poll() is None:
        with open(running.output, encoding="utf-8", errors="replace") as f:
            if answer in f.read():
                return
        time.sleep(0.05)
    r = running.wait(check=False)
    if press == 1 and answer not in r.output:
        pytest.fail("Ctrl-C 1: knotty never answered %r (exit %d):\n%s"
                    % (answer, r.returncode, "\n".join(r.output.splitlines()[-30:])))


def wait_gone(bd, what, timeout=120):
    """Waits until no vxn-blobs `what` process of this TOPDIR runs; returns how long it took."""
    t0 = time.time()
    while tool_pids(bd, what) and time.time() - t0 < timeout:
        time.sleep(0.1)
    assert not tool_pids(bd, what), "vxn-blobs %s still runs %d s later" % (what, timeout)
    return time.time() - t0


# -- what the tool left ----------------------------------------------------------------------

def temp_files(tier, roots, allowed):
    """Files named like the tool's temporaries under `roots` that the build user owns (other
    users' test suites use /tmp too), except below the `allowed` directories."""
    uid = pwd.getpwnam(tier.user).pw_uid
    found = []
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            if any(dirpath == a or dirpath.startswith(a + "/") for a in allowed):
                dirs[:] = []
                continue
            for name in files + dirs:
                path = os.path.join(dirpath, name)
                try:
                    if is_temp(name) and os.lstat(path).st_uid == uid:
                        found.append(path)
                except FileNotFoundError:
                    pass
    return found


# -- the deploy watcher ----------------------------------------------------------------------

class DeployWatch:
    """Polls vxn/<arch>/ of each TOPDIR's DEPLOY_DIR_IMAGE until stopped: whenever it exists it
    must hold SHA256SUMS and exactly the files it lists, each matching. Files are hashed once
    per (inode, size, mtime): deploys replace files, never rewrite them."""

    def __init__(self):
        self.dirs = []
        self.polls = 0
        self.seen = 0          # polls that found a directory
        self.problems = []
        self._hashes = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, bd):
        self.dirs.append(deployed(bd))

    def _digest(self, path):
        st = os.stat(path)
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256(path)
        return self._hashes[key]

    def check(self, directory):
        """None when `directory` is absent or complete and intact, else what is wrong."""
        try:
            identity = os.stat(directory)
            names = set(os.listdir(directory))
        except FileNotFoundError:
            return None
        self.seen += 1
        problem = self._problem(directory, names)
        # A test removes a whole TMPDIR by renaming it first, and a poll that began before the
        # rename reads on after it: its files vanish mid-check (seen once in a clean-clone run,
        # "README listed but gone"). What counts is a partial directory at the path, so a
        # problem is one only while the directory read is still the one there.
        try:
            now = os.stat(directory)
            still_there = (now.st_dev, now.st_ino) == (identity.st_dev, identity.st_ino)
        except FileNotFoundError:
            still_there = False
        return problem if still_there else None

    def _problem(self, directory, names):
        try:
            with open(os.path.join(directory, "SHA256SUMS"), encoding="utf-8") as f:
                sums = dict(reversed(line.split("  ", 1)) for line in f.read().splitlines())
        except FileNotFoundError:
            return "no SHA256SUMS among %s" % sorted(names)
        if names - {"SHA256SUMS"} != set(sums):
            return "files %s, SHA256SUMS lists %s" % (sorted(names), sorted(sums))
        for name, digest in sums.items():
            try:
                if self._digest(os.path.join(directory, name)) != digest:
                    return "%s does not match SHA256SUMS" % name
            except FileNotFoundError:
                return "%s listed but gone" % name
        return None

    def _run(self):
        while not self._stop.is_set():
            for directory in list(self.dirs):
                problem = self.check(directory)
                if problem:
                    self.problems.append("%.3f %s: %s" % (time.time(), directory, problem))
            self.polls += 1
            time.sleep(0.002)

    def stop(self):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def watch():
    w = DeployWatch()
    yield w
    w.stop()
    oetier.log("faults: the deploy watcher polled %d times, found a vxn/<arch>/ %d times, "
               "problems: %s" % (w.polls, w.seen, w.problems or "none"))
    assert not w.problems, "a partial vxn/<arch>/ was visible:\n" + "\n".join(w.problems[:20])


def test_the_deploy_watcher_sees_a_partial_set_but_not_a_removed_tmpdir(tmp_path):
    """The watcher itself, without BitBake: it must report what a partial deploy looks like, or
    the scenarios' clean reports would prove nothing, and it must not report a TMPDIR that a
    scenario moved away while a poll was reading it."""
    w = DeployWatch()
    w.stop()
    out = tmp_path / "tmp" / "deploy" / "vxn" / "x86_64"
    out.mkdir(parents=True)
    for name in ("README", "rootfs.img"):
        (out / name).write_text(name)
    (out / "SHA256SUMS").write_text("".join("%s  %s\n" % (sha256(str(out / n)), n)
                                            for n in ("README", "rootfs.img")))
    assert w.check(str(out)) is None
    (out / "extra").write_text("")
    assert "SHA256SUMS lists" in w.check(str(out))
    (out / "extra").unlink()
    os.rename(out / "README", tmp_path / "README")
    assert "SHA256SUMS lists" in w.check(str(out))
    os.rename(tmp_path / "README", out / "README")
    (out / "SHA256SUMS").write_text("%s  README\n%s  rootfs.img\n" % ("0" * 64, sha256(str(out / "rootfs.img"))))
    assert w.check(str(out)) == "README does not match SHA256SUMS"

    class RenamedMidPoll(DeployWatch):
        def _problem(self, directory, names):
            os.rename(tmp_path / "tmp", tmp_path / "tmp.removed")
            return super()._problem(directory, names)

    mid = RenamedMidPoll()
    mid.stop()
    assert mid.check(str(out)) is None
    assert w.check(str(tmp_path / "tmp.removed" / "deploy" / "vxn" / "x86_64")) == "README does not match SHA256SUMS"


# -- the scenarios ---------------------------------------------------------------------------

def test_sigkill_of_every_bitbake_process_in_compile_and_in_deploy(tier, primary, watch):
    """A CI timeout kills the whole of BitBake while vxn-blobs transcodes the rootfs in
    do_compile, and again while it deploys; the next build needs no cleanup and deploys what a
    clean build deploys."""
    t0 = time.time()
    bd = faults_dir(tier, primary, "kill")
    watch.watch(bd)
    bd.write_conf(conf("kill-a"))
    bd.bitbake(RECIPE)
    say("first build of faults-kill", t0)

    # The rootfs changes (another variant): do_compile reuses the payload's blocks from the
    # previous rootfs.img and transcodes the variant's; killed while that staged file grows.
    bd.write_conf(conf("kill-b"))
    running = bd.start(RECIPE)
    size = wait_for_tool(bd, running, "compile", growing=build_dir(bd))
    killed, orphans = kill_bitbake(bd, running)
    say("killed %d BitBake processes in do_compile (staged rootfs at %d bytes); vxn-blobs "
        "left running: %s" % (len(killed), size, orphans or "none"), t0)
    assert killed and not any(_alive(p) for p in killed)

    r = bd.bitbake(RECIPE)
    say("the next build after the kill in do_compile (rootfs.img: %d bytes)"
        % os.path.getsize(os.path.join(deployed(bd), "rootfs.img")), t0)
    assert vxn_tasks(r) == ["do_compile", "do_deploy"], vxn_tasks(r)
    assert not r.warnings(), "\n".join(r.warnings())
    reference = reference_set(tier, bd, "kill-b")
    assert the_set(bd) == reference, "the deployed set differs from a cold compile's"
    assert not temp_files(tier, [build_dir(bd)], []), "temporaries left in ${B}"

    # Killed inside do_deploy (a changed VXN_CHECK reruns both tasks; compile reuses its outputs).
    bd.write_conf(conf("kill-b", 'VXN_CHECK = "error"\n'))
    earlier = tool_pids(bd, "compile") + tool_pids(bd, "deploy")
    running = bd.start(RECIPE)
    wait_for_tool(bd, running, "deploy", earlier=earlier)
    killed, orphans = kill_bitbake(bd, running)
    say("killed %d BitBake processes in do_deploy; vxn-blobs left running: %s"
        % (len(killed), orphans or "none"), t0)
    r = bd.bitbake(RECIPE)
    say("the next build after the kill in do_deploy", t0)
    assert "do_deploy" in vxn_tasks(r), vxn_tasks(r)
    assert not r.warnings(), "\n".join(r.warnings())
    # VXN_CHECK is in the spec but changes no output: the same bytes as the cold compile's.
    assert the_set(bd) == reference
    assert not temp_files(tier, [bd.topdir], [build_dir(bd)]), "temporaries outside ${B}"


def test_ctrl_c_in_do_compile(tier, primary, watch):
    """Ctrl-C in the terminal: knotty asks BitBake to stop, which lets do_compile finish and
    starts nothing else; pressed twice, BitBake terminates the running task. Either way the tool
    leaves no temporary file outside ${B} and ${T}, and the next build succeeds."""
    t0 = time.time()
    bd = faults_dir(tier, primary, "kill")
    watch.watch(bd)
    for what in ("compile", "deploy"):  # what the kill test left running has ended
        wait_gone(bd, what)
    for presses, variant in ((1, "ctrl-c-1"), (2, "ctrl-c-2")):
        bd.write_conf(conf(variant))
        running = bd.start(RECIPE, tool="PYTHONUNBUFFERED=1 bitbake")
        wait_for_tool(bd, running, "compile", growing=build_dir(bd))
        for press in range(1, presses + 1):
            press_ctrl_c(running, press)
        r = running.wait(check=False)
        took = wait_gone(bd, "compile")
        compiled = "%s-1.0-r0: task do_compile: Succeeded" % RECIPE
        # On idle cores the transcode can end between the two presses: then the second one
        # finds no task to terminate and the build ends as after one press. Which it was, the
        # task's own log says (knotty may exit before it prints the last task's outcome).
        with open(os.path.join(workdir(bd), "temp", "log.do_compile"), encoding="utf-8", errors="replace") as f:
            finished = "Shell function do_compile finished" in f.read()
        forced = presses == 2 and not finished
        say("Ctrl-C x%d in do_compile: bitbake exit %d; vxn-blobs gone %.1f s later; %s"
            % (presses, r.returncode, took, "the task terminated" if forced else "do_compile finished first"), t0)
        assert r.returncode != 0
        assert "Keyboard Interrupt" in r.output and "Execution was interrupted" in r.output, r.output[-2000:]
        assert "do_deploy" not in r.ran(RECIPE), r.ran(RECIPE)
        if not forced:
            # "Stopped build" is BitBake's ERROR line for any interrupted build.
            assert finished and "task failed" not in r.output, r.output[-3000:]
            assert presses == 2 or compiled in r.output, r.output[-3000:]
        else:
            # The forced shutdown: SIGTERM to the task's process group, vxn-blobs included, cut
            # the task short. Its worker's "Sending SIGTERM to remaining 1 tasks" reaches knotty
            # only when knotty has not exited first: in one clean-clone run it had, with the
            # task's log ending at the tool's "86%".
            assert "Second Keyboard Interrupt, stopping" in r.output, r.output[-3000:]
        t1 = time.time()
        while bitbake_processes(bd, running) and time.time() - t1 < 60:
            time.sleep(0.2)  # the server ends a moment after its last client
        assert not bitbake_processes(bd, running)
        leftovers = temp_files(tier, [bd.topdir, "/tmp"], [build_dir(bd), os.path.join(workdir(bd), "temp")])
        assert not leftovers, leftovers

        r = bd.bitbake(RECIPE)
        say("the next build after Ctrl-C x%d" % presses, t0)
        assert "do_deploy" in vxn_tasks(r), vxn_tasks(r)
        if forced:  # the tool was terminated in the transcode: the rerun must start clean
            assert the_set(bd) == reference_set(tier, bd, variant)


def test_two_topdirs_share_sstate_then_a_third_restores_from_it(tier, primary, watch):
    """Two TOPDIRs build the same new inputs at the same time with one SSTATE_DIR (and its hash
    equivalence database) and one DL_DIR; a third, fresh one then restores do_deploy from that
    sstate. All three deploy the same bytes."""
    t0 = time.time()
    dirs = [faults_dir(tier, primary, "shared-%d" % i) for i in (1, 2, 3)]
    for bd in dirs:
        watch.watch(bd)
        bd.write_conf(conf("shared"))
    before = set(sstate_objects(tier, dirs[0], "deploy"))
    runs = [bd.start(RECIPE) for bd in dirs[:2]]
    results = [r.wait(check=False) for r in runs]
    say("two TOPDIRs built at once: exit %s, tasks %s" % ([r.returncode for r in results],
                                                          [vxn_tasks(r) for r in results]), t0)
    for r in results:
        assert r.returncode == 0, r.output[-3000:]
        assert not r.warnings(), "\n".join(r.warnings())
    made = sorted(set(sstate_objects(tier, dirs[0], "deploy")) - before)
    assert len(made) == 1, made
    # Neither fresh TOPDIR had a previous rootfs.img; the block cache in the shared SSTATE_DIR,
    # written by every earlier build of the stand-in (and by each other, at the same time),
    # spared them the payload's blocks, which no variant changes.
    for bd in dirs[:2]:
        with open(os.path.join(workdir(bd), "temp", "log.do_compile"), encoding="utf-8", errors="replace") as f:
            copied, cached, compressed, total = block_sources(f.read())
        say("%s: %d of %d blocks from the block cache, %d compressed"
            % (os.path.basename(bd.topdir), cached, total, compressed), t0)
        assert copied == 0 and cached >= PAYLOAD_BLOCKS, (copied, cached, compressed, total)
    third = dirs[2].bitbake(RECIPE)
    say("the third TOPDIR restored from the shared sstate: %s" % vxn_tasks(third), t0)
    assert vxn_tasks(third) == ["do_deploy_setscene"], vxn_tasks(third)
    sets = [the_set(bd) for bd in dirs]
    assert sets[0] == sets[1] == sets[2]
    assert sets[0] == reference_set(tier, dirs[0], "shared")
    SHARED.update(object=made[0], set=sets[0], topdir=dirs[2])


def damage(path, how):
    """Writes a damaged copy of an sstate object over it: "truncated" cuts it in half;
    "corrupted" changes bytes of rootfs.img inside a well-formed archive (bit rot before the
    compression, a bad mirror), which nothing in tar or zstd can notice."""
    with open(path, "rb") as f:
        data = f.read()
    if how == "truncated":
        damaged = data[:len(data) // 2]
    else:
        plain = subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
        scratch = path + ".faults-tmp"
        with open(scratch + ".tar", "wb") as f:
            f.write(plain)
        with tarfile.open(scratch + ".tar") as src, tarfile.open(scratch + ".new", "w") as dst:
            for member in src.getmembers():
                content = src.extractfile(member).read() if member.isfile() else None
                if member.name.endswith("/rootfs.img"):
                    content = content[:4096] + bytes(b ^ 0xff for b in content[4096:4160]) + content[4160:]
                dst.addfile(member, None if content is None else io.BytesIO(content))
        with open(scratch + ".new", "rb") as f:
            damaged = subprocess.run(["zstd", "-c"], input=f.read(), capture_output=True, check=True).stdout
        os.unlink(scratch + ".tar")
        os.unlink(scratch + ".new")
    st = os.stat(path)
    with open(path, "wb") as f:
        f.write(damaged)
    os.chown(path, st.st_uid, st.st_gid)


def test_a_damaged_deploy_sstate_object_is_never_deployed(tier, primary, watch):
    """A fresh TMPDIR finds the do_deploy sstate object damaged: do_deploy_setscene fails
    (tar for a truncated one, meta-vxn's SHA256SUMS check for an intact archive with other
    bytes), BitBake runs do_compile and do_deploy instead, and deploys the right set."""
    t0 = time.time()
    if SHARED:  # the third TOPDIR of the sharing test and the object it restored from
        bd, obj, good = SHARED["topdir"], SHARED["object"], SHARED["set"]
    else:
        bd = faults_dir(tier, primary, "sstate")
        watch.watch(bd)
        bd.write_conf(conf("damaged"))
        before = set(sstate_objects(tier, bd, "deploy"))
        bd.bitbake(RECIPE)
        made = sorted(set(sstate_objects(tier, bd, "deploy")) - before)
        assert len(made) == 1, "expected one new do_deploy sstate object, not %s" % made
        obj = made[0]
        good = the_set(bd)
        assert good == reference_set(tier, bd, "damaged")
        say("built faults-sstate", t0)
    with open(obj, "rb") as f:
        intact = f.read()
    for how in ("corrupted", "truncated"):
        damage(obj, how)
        for tmp in ("tmp", "tmp-" + MC):
            # Renamed first: deleted in place, the watcher would see vxn/<arch>/ lose its files.
            os.rename(bd.path(tmp), bd.path(tmp + ".removed"))
            shutil.rmtree(bd.path(tmp + ".removed"))
        r = bd.bitbake(RECIPE)
        say("%s do_deploy sstate object, fresh TMPDIR: %s" % (how, vxn_tasks(r)), t0)
        assert vxn_tasks(r) == ["do_deploy_setscene", "do_compile", "do_deploy"], vxn_tasks(r)
        assert any("do_deploy_setscene" in l for l in r.warnings()), r.output[-3000:]
        if how == "corrupted":
            assert any("rootfs.img does not match SHA256SUMS" in l for l in r.lines("WARNING:")), r.output[-3000:]
        assert the_set(bd) == good
        with open(obj, "wb") as f:
            f.write(intact)
