# With meta-virtualization in BBLAYERS its vxn package is the Dom0's: meta-vxn's bbappend gives
# it the blobs of vxn-initramfs-create, and it RPROVIDES, RREPLACES and RCONFLICTS
# vxn-dom0-blobs, so that an image with IMAGE_INSTALL:append = " vxn-dom0-blobs" gets vxn and no
# two packages own /usr/share/vxn/<arch>/. This recipe stays for builds without it.
# A skip that depends on the layers present, which only anonymous python can act on.
# nooelint: oelint.task.noanonpython
python __anonymous() {
    raise bb.parse.SkipRecipe("meta-virtualization's vxn package carries the blobs when meta-virtualization "
                              "is in BBLAYERS (meta-vxn bbappends it) and RPROVIDES vxn-dom0-blobs: "
                              "install vxn")
}
