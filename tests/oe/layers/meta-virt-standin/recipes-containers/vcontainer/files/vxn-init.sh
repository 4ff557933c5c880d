#!/bin/sh
# Stand-in for meta-virtualization's vxn-init.sh: the init the preinit switch_roots into.
. /vcontainer-init-common.sh
vcontainer_banner "vxn-init (stand-in 1)"
