SUMMARY = "The build host's pseudo, as pseudo-native (offline test stand-in)"
DESCRIPTION = "OE-core's pseudo-native is built from a git download, which an offline test \
               machine cannot make. This recipe stages the host's Debian pseudo (packages pseudo \
               and libpseudo) where OE-core's FAKEROOTCMD and PSEUDO_LIBDIR look for it, so \
               that fakeroot tasks (do_install, do_package) really run under pseudo."
LICENSE = "LGPL-2.1-only"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/LGPL-2.1-only;md5=1a6d268fd218675ffea8be556788b780"

inherit native

PROVIDES = "virtual/fakeroot-native"
INHIBIT_DEFAULT_DEPS = "1"

HOST_PSEUDO ?= "/usr/bin/pseudo"
HOST_LIBPSEUDO ?= "/usr/lib/${BUILD_ARCH}-linux-gnu/pseudo/libpseudo.so"

# Prebuilt host binaries: nothing to strip or relocate.
INHIBIT_SYSROOT_STRIP = "1"

do_configure[noexec] = "1"
do_compile[noexec] = "1"
do_install() {
    for f in ${HOST_PSEUDO} ${HOST_LIBPSEUDO}; do
        [ -f "$f" ] || bbfatal "$f is missing: install Debian's pseudo and libpseudo packages (scripts/test.sh does)"
    done
    install -D -m 0755 ${HOST_PSEUDO} ${D}${bindir}/pseudo
    install -D -m 0644 ${HOST_LIBPSEUDO} ${D}${prefix}/lib/pseudo/lib/libpseudo.so
    install -D -m 0644 ${HOST_LIBPSEUDO} ${D}${prefix}/lib/pseudo/lib64/libpseudo.so
}
