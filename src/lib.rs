//! vxn-blobs as a library: everything the `vxn-blobs` command does, for callers that want the
//! pieces without the command line.
//!
//! The crate assembles the Xen DomU boot blobs of meta-virtualization's vxn: a kernel, a tiny
//! initramfs and a squashfs root filesystem into which two init scripts are injected.
//!
//! - [`squashfs`] is the engine: it injects files into an existing squashfs image while keeping
//!   every inode, xattr, hardlink and table of the source, and it knows nothing of BitBake.
//!
//! The command-line front end (`src/main.rs`) only parses arguments, calls into this crate and
//! reports errors.

pub mod squashfs;
