#!/bin/sh
# Stand-in for meta-virtualization's vcontainer-init-common.sh, sourced by the init scripts.
vcontainer_banner() {
    echo "vcontainer: $1"
}
