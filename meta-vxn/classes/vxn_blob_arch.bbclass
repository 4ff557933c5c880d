# SPDX-License-Identifier: MIT
#
# vxn_blob_arch.bbclass
#
# Purpose:
# The seed's per-architecture choices, in one table so that they stay consistent wherever they
# are used: the vruntime multiconfig that builds the inputs, the directory under vxn/ and the
# kernel image's name, from TARGET_ARCH. vxn-initramfs-create.bbclass assembles and deploys the
# blobs under these names (its VXN_MULTICONFIG, VXN_BLOB_ARCH and VXN_KERNEL_IMAGETYPE);
# vxn-dom0-blobs packages what it deployed, and finds it under the same ones.

# Returns (multiconfig, blob arch, kernel image name) for TARGET_ARCH; unknown architectures
# fall back to the aarch64 multiconfig, as vxn-initramfs-create.inc does.
def vxn_arch_info(d):
    arch = d.getVar('TARGET_ARCH')
    if arch == 'aarch64':
        return ('vruntime-aarch64', 'aarch64', 'Image')
    if arch in ('x86_64', 'i686', 'i586'):
        return ('vruntime-x86-64', 'x86_64', 'bzImage')
    if arch == 'arm':
        return ('vruntime-aarch64', 'aarch64', 'zImage')
    return ('vruntime-aarch64', 'aarch64', 'Image')
