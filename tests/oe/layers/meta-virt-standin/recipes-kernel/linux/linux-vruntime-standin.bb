SUMMARY = "Stand-in for the vruntime kernel: a file with its architecture's boot header"
DESCRIPTION = "Deploys bzImage (x86-64: the 0xAA55 boot flag and HdrS at 0x202, as the Linux \
               boot protocol has) or Image (arm64: ARM\\x64 at 0x38) through do_deploy's sstate, \
               as a kernel recipe does. Nothing boots it: tests/oe checks what meta-vxn does \
               with it; the boot tier boots a real kernel."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

PROVIDES = "virtual/kernel"
COMPATIBLE_MACHINE = "qemux86-64|qemuarm64"
INHIBIT_DEFAULT_DEPS = "1"
PACKAGE_ARCH = "${MACHINE_ARCH}"
inherit deploy nopackages
deltask do_populate_sysroot

STANDIN_KERNEL_VERSION = "6.6.0-vruntime-standin"
KERNEL_IMAGETYPE = "${@'Image' if d.getVar('TARGET_ARCH') == 'aarch64' else 'bzImage'}"

python do_deploy() {
    image = bytearray(16384)
    version = d.getVar('STANDIN_KERNEL_VERSION').encode()
    if d.getVar('KERNEL_IMAGETYPE') == 'Image':
        image[0x38:0x3c] = b'ARM\x64'
    else:
        image[0x1fe:0x200] = b'\x55\xaa'
        image[0x202:0x206] = b'HdrS'
        image[0x206:0x208] = (0x020f).to_bytes(2, 'little')
    image[0x400:0x400 + len(version)] = version
    deploydir = d.getVar('DEPLOYDIR')
    name = d.getVar('KERNEL_IMAGETYPE')
    with open(os.path.join(deploydir, name + '-' + d.getVar('STANDIN_KERNEL_VERSION')), 'wb') as f:
        f.write(image)
    os.symlink(name + '-' + d.getVar('STANDIN_KERNEL_VERSION'), os.path.join(deploydir, name))
}
addtask deploy after do_compile before do_build
