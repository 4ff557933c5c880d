"""The real layers a Dom0 build of meta-virtualization's vxn uses, for tests/oe/test_real_layers.py.

(Helpers for the real-layers part of the tier; a module of its own beside oetier.py.)

Where they come from (docs/testing.md, "The real layers"):
  VXN_META_VIRT, VXN_META_OE, VXN_META_YOCTO=<checkout or snapshot tarball>  a user's own
      meta-virtualization, meta-openembedded and meta-yocto (VXN_META_YOCTO may be left out
      when the OE-core checkout is a poky one, which has meta-poky);
  VXN_OE_SNAPSHOTS=<dir>  else meta-virtualization-<series>-*, meta-openembedded-<series>-* and
      meta-yocto-<series>-* tarballs in it (what .ci/run uses: ../shared/oe).
They pair with the tier's OE-core series of the same name (wrynose: meta-virtualization's
LAYERSERIES_COMPAT).
"""

import dataclasses
import glob
import os
import re

import oetier

SERIES = "wrynose"
MC = "vruntime-x86-64"

ENABLE_HINT = ("the real-layers tier needs meta-virtualization, meta-openembedded and meta-yocto (%s) "
               "beside OE-core: set VXN_META_VIRT, VXN_META_OE and VXN_META_YOCTO to checkouts or "
               "snapshot tarballs, or VXN_OE_SNAPSHOTS to a directory holding "
               "meta-virtualization-%s-*.tar.gz, meta-openembedded-%s-*.tar.gz and "
               "meta-yocto-%s-*.tar.gz; see docs/testing.md" % ((SERIES,) * 4))

# A Xen Dom0 build, with the vruntime multiconfig of this machine, in every TOPDIR of the real
# layers but check-layer-real-<series>: xen-host.conf's features (virtualization, vcontainer,
# xen, vxn) for the Dom0's configuration alone (DISTRO nodistro here), since local.conf is read by
# every multiconfig and meta-virt-host.conf's appends (systemd among them) make the vruntime
# images unresolvable ("Nothing RPROVIDES 'udev'", docs/integration.md); its two
# BBFILE_PATTERN_IGNORE_EMPTY lines for the layers vruntime masks.
DOM0_CONF = '''# A Xen Dom0 build (the default configuration) with the vruntime multiconfig.
DISTRO_FEATURES:append:nodistro = " virtualization vcontainer xen vxn"
BBMULTICONFIG = "%s"
BBFILE_PATTERN_IGNORE_EMPTY_filesystems-layer = "1"
BBFILE_PATTERN_IGNORE_EMPTY_meta-python = "1"
''' % MC


@dataclasses.dataclass
class Stack:
    """The layers of the real stack, by path."""
    series: oetier.Series
    meta_virt: str      # the layer itself (conf/layer.conf inside)
    meta_oe: str        # the meta-openembedded repository (meta-oe, meta-python... inside)
    meta_yocto: str     # a directory holding meta-poky

    def dependencies(self):
        """The layers meta-virtualization needs, in BBLAYERS order (OE-core's meta is added by
        BuildDir): its LAYERDEPENDS and meta-poky for the vruntime distro."""
        return [os.path.join(self.meta_oe, name) for name in
                ("meta-oe", "meta-python", "meta-networking", "meta-filesystems")] + \
               [os.path.join(self.meta_yocto, "meta-poky"), self.meta_virt]


# Each source, as a snapshot unpacks or a checkout is: the repository's name and the file that
# marks it (the layer itself for meta-virtualization, the directory of the layers for the others).
SOURCES = {
    "VXN_META_VIRT": ("meta-virtualization", "conf/layer.conf"),
    "VXN_META_OE": ("meta-openembedded", "meta-oe/conf/layer.conf"),
    "VXN_META_YOCTO": ("meta-yocto", "meta-poky/conf/layer.conf"),
}


def _locate(path, name, marker):
    for candidate in (path, os.path.join(path, name)):
        if os.path.isfile(os.path.join(candidate, marker)):
            return candidate
    raise RuntimeError("%s has no %s: not a %s checkout or snapshot" % (path, marker, name))


def discover(tier):
    """The real stack for the tier's wrynose series, or None when nothing is configured."""
    series = tier.series_named(SERIES)
    if not series:
        return None
    snapshots = os.environ.get("VXN_OE_SNAPSHOTS")
    found = {}
    for var, (name, marker) in SOURCES.items():
        source = os.environ.get(var)
        if not source and var == "VXN_META_YOCTO" and os.path.isfile(os.path.join(series.oe_core, marker)):
            source = series.oe_core  # a poky checkout has meta-poky
        if not source and snapshots:
            tarballs = sorted(glob.glob(os.path.join(snapshots, "%s-%s-*.tar*" % (name, SERIES))))
            source = tarballs[-1] if tarballs else None
        if not source:
            return None
        found[var] = _locate(oetier._unpack(source, tier.sources), name, marker)
    return Stack(series, found["VXN_META_VIRT"], found["VXN_META_OE"], found["VXN_META_YOCTO"])


def check_dir(tier, stack):
    """check-real-<series>: the whole real stack (no mask) with meta-vxn and the Dom0
    configuration, multiconfig included, parsed in the background by start_parse;
    `bitbake -p`, bitbake-layers and `bitbake -g` of test_real_layers.py then run on its cache."""
    bd = oetier.BuildDir(tier, stack.series, "check-real-" + stack.series.name,
                         stack.dependencies() + [oetier.meta_vxn(tier)],
                         sstate="sstate-check-real-" + stack.series.name)
    bd.write_conf(DOM0_CONF)
    return bd


# The host's C compiler for vxn-sendtty, as the host's rust for cargo: the cross toolchain and
# libc that ${CC} needs are downloads, so they are ASSUME_PROVIDED and vxn's compile gets the
# host's gcc (in OE-core's HOSTTOOLS) with OE's flags but -fcanon-prefix-map (gcc 13's; the
# host has gcc 12). Packaging an ELF file without binutils-cross: no strip or debug split, the
# host's objdump for the shared-library scan, no rpmdeps (rpm-native) file dependencies.
HOST_CC_CONF = '''# The host's C compiler for vxn-sendtty (tests/oe: the cross toolchain is a download).
ASSUME_PROVIDED += "gcc-cross-x86_64 virtual/cross-cc virtual/compilerlibs virtual/libc"
CC:pn-vxn = "gcc"
DEBUG_PREFIX_MAP:remove:pn-vxn = "-fcanon-prefix-map"
OBJDUMP:pn-vxn = "objdump"
INHIBIT_PACKAGE_STRIP:pn-vxn = "1"
INHIBIT_PACKAGE_DEBUG_SPLIT:pn-vxn = "1"
SKIP_FILEDEPS:pn-vxn = "1"
'''


def offline_conf(stack):
    """local.conf of the offline builds on the real layers (after BuildDir's own): the Dom0
    configuration without the multiconfig, every recipe masked but OE-core's recipes-core/meta,
    meta-vxn's, the offline shims' and meta-virtualization's recipes-core/vxn (vxn and its own
    vxn-initramfs-create, which meta-vxn's overlays), the inputs by path (vxn-blobs demo's, in
    ${TOPDIR}/demo/inputs) and the host's C compiler."""
    masks = ['BBMASK += "^%s/"' % re.escape(os.path.join(stack.meta_oe, "")).rstrip("/"),
             'BBMASK += "^%s/"' % re.escape(os.path.join(stack.meta_yocto, "")).rstrip("/"),
             'BBMASK += "^%s/(?!recipes-core/vxn/)"' % re.escape(stack.meta_virt)]
    ignore = "".join('BBFILE_PATTERN_IGNORE_EMPTY_%s = "1"\n' % c
                     for c in ("openembedded-layer", "networking-layer", "meta-python", "filesystems-layer", "yocto"))
    return (DOM0_CONF.replace('BBMULTICONFIG = "%s"' % MC, 'BBMULTICONFIG = ""') +
            "\n".join(masks) + "\n" + ignore +
            'VXN_MC_DEPLOY_DIR = "${TOPDIR}/demo/inputs"\n' + HOST_CC_CONF)


def offline_dir(tier, stack, name=None, sstate=None, checkout=None):
    """build-real-<series> (test_real_layers.py), or with `name`, `sstate` and `checkout`
    another TOPDIR of that configuration: the real layers, meta-vxn and the offline shims (from
    another copy of the checkout), offline_conf in local.conf.

    build-real-<series>'s SSTATE_DIR is the stand-in builds' (test_build.py, same series, run
    before): the native tool comes from there when its signature matches."""
    layers = stack.dependencies() + [oetier.meta_vxn(tier, checkout),
                                     oetier.standin_layer(tier, "meta-offline-standin", checkout=checkout)]
    bd = oetier.BuildDir(tier, stack.series, name or "build-real-" + stack.series.name, layers, mask=True,
                         sstate=sstate or "sstate-" + stack.series.name)
    bd.write_conf(offline_conf(stack))
    return bd


def make_demo_inputs(tier, bd):
    """The stand-in inputs by path of an offline TOPDIR, made by the tool it built (bitbake
    vxn-blobs-native first): vxn-blobs demo writes a small but real rootfs squashfs, tiny
    initramfs and kernel named as the vruntime deploy names them. Returns the tool's path."""
    tool = bd.path("tmp", "sysroots-components", "x86_64", "vxn-blobs-native", "usr", "bin", "vxn-blobs")
    demo = tier.run_as_user([tool, "demo", "--out", bd.path("demo")])
    assert demo.returncode == 0, demo.stderr
    assert os.path.exists(bd.path("demo", "inputs", "vdkr-rootfs-image-qemux86-64.rootfs.squashfs"))
    return tool


def start_parse(tier, stack):
    """The whole stack parsed in check-real-<series>, in the background from the tier's start,
    beside the stand-in builds. Twice: in a fresh TOPDIR BitBake 2.18's first command can hash
    its configuration differently from every later one (docs/testing.md, "A second parse in
    a fresh TOPDIR": seen on OE-core alone, not on this stack, where the second took 11 s), and then
    the second, not a test's command, pays the full parse. The first is the parse whose warnings
    the parse test reads."""
    return check_dir(tier, stack).start("-p", tool="bitbake -p && bitbake")


# yocto-check-layer on meta-vxn beside the real stack runs in the default configuration, as the
# Yocto Project Compatible check runs a layer: no distro features, no multiconfig. There adding
# meta-vxn must change no signature of world, and it does not: the one recipe its bbappend changes,
# meta-virtualization's vxn, is skipped without "xen" in DISTRO_FEATURES (vxn_1.0.bb's
# REQUIRED_DISTRO_FEATURES), so enabling Xen is the user's opt-in; and both vxn-initramfs-create
# recipes are out of world. The Dom0 configuration cannot be the check's: there the bbappend
# changes vxn on purpose (test_real_layers.py shows how), and world in the vruntime multiconfig
# fails in meta-openembedded ("Nothing PROVIDES 'gstreamer1.0' (but
# mc:vruntime-x86-64:.../freerdp_2.11.8.bb ...)": its BBMASK cuts off what meta-oe's recipes
# need). docs/testing.md, "yocto-check-layer beside the real layers".
#
# Its four world signature dumps cannot share one parse: test_parse's `bitbake -p` fills BitBake's
# recipe cache without the signature data (`-S` asks for the RECIPE_SIGGEN_INFO feature, and a
# cache without it is invalid for such a command), so test_signatures parses the stack again
# and test_world uses its cache. (Setting the signature handler the check's world commands force,
# OEBasicHash, in local.conf as well did not help, for that reason: tried in CI, 2026-12-05.)
CHECK_LAYER_CONF = "# The default configuration: what yocto-check-layer checks a layer in.\n"


def start_check_layer(tier, stack):
    """yocto-check-layer on meta-vxn, every test, with the real layers as --dependency (they are
    in bblayers.conf already: it adds only LAYERDEPENDS, and meta-vxn's is core alone), in the
    background from the tier's start; --no-auto-dependency because its discovery crashes on
    meta-virtualization's dynamic-layers/raspberrypi, which has no layer.conf."""
    bd = oetier.BuildDir(tier, stack.series, "check-layer-real-" + stack.series.name, stack.dependencies(),
                         sstate="sstate-check-layer-real-" + stack.series.name)
    bd.write_conf(CHECK_LAYER_CONF)
    running = bd.start(oetier.meta_vxn(tier), "--no-auto-dependency", "--dependency", *stack.dependencies(),
                       tool="yocto-check-layer")
    bd.favour(running)
    return running


def server_commands(path):
    """What each BitBake server of a TOPDIR did, from its bitbake-cookerdaemon.log: a
    (command, seconds parsing recipes, seconds in all) per server that built targets or parsed,
    in order; the budget's account of a yocto-check-layer run (docs/testing.md, "Where CI's
    time goes")."""
    def seconds(clock):
        h, m, s = clock.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    servers = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"^(\d+) (\d\d:\d\d:\d\d\.\d+) (.*)$", line)
            if not m:
                continue
            pid, t, what = m.group(1), seconds(m.group(2)), m.group(3)
            server = servers.setdefault(pid, {"start": t, "command": None, "parse": 0.0, "end": t})
            server["end"] = t
            command = re.match(r"Running command \['(buildTargets|parseFiles)'(?:, (\[[^\]]*\]))?", what)
            if command:
                server["command"] = command.group(1) + (" " + command.group(2) if command.group(2) else "")
            elif what == "Parsing started":
                server["parse_start"] = t
            elif what == "Parsing completed" and "parse_start" in server:
                server["parse"] = (t - server["parse_start"]) % 86400
    return [(s["command"], s["parse"], (s["end"] - s["start"]) % 86400) for s in servers.values() if s["command"]]


def parse_dot(path):
    """task-depends.dot as {task: set(dependencies)}, task names as BitBake writes them:
    [mc:<mc>:]<pn>.<task>."""
    edges = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r'^"([^"]+)" -> "([^"]+)"', line)
            if m:
                edges.setdefault(m.group(1), set()).add(m.group(2))
                edges.setdefault(m.group(2), set())
                continue
            m = re.match(r'^"([^"]+)" \[label=', line)
            if m:
                edges.setdefault(m.group(1), set())
    return edges


def locked_sigs(path):
    """locked-sigs.inc (bitbake -S lockedsigs) as {"<pn>:<task>": hash}."""
    sigs = {}
    with open(path, encoding="utf-8") as f:
        for m in re.finditer(r"^\s+([^\s:]+):(do_\w+):([0-9a-f]{64})", f.read(), re.M):
            sigs["%s:%s" % (m.group(1), m.group(2))] = m.group(3)
    return sigs
