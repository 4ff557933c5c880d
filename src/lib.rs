//! vxn-blobs as a library: everything the `vxn-blobs` command does, for callers that want the
//! pieces without the command line.
//!
//! The crate assembles the Xen DomU boot blobs of meta-virtualization's vxn: a kernel, a tiny
//! initramfs and a squashfs root filesystem into which two init scripts are injected.
//!
//! # Layers
//!
//! Imports point down this table, never up: each module uses only modules listed below it, as
//! its last column says (tests/python/test_layers.py holds the code to this table). The
//! commands are on top, the crate-level [`Error`] under them (only they return it), then what
//! they share, the engine and the input checks, and the file helpers at the bottom. Each module
//! under the commands has a typed error of its own, which [`Error`] wraps.
//!
//! | module | what it is | uses |
//! |---|---|---|
//! | [`demo`] | `demo`: makes a small input set, runs compile and deploy, explains the result | compile, deploy, check, spec, blob_set, squashfs, kernel, safe_fs, error |
//! | [`deploy`] | `deploy` and `install`: a completed compile installed atomically, boot-checked first | check, spec, blob_set, identity, safe_fs, error |
//! | [`compile`] | `compile`: the seed's do_compile, with a digest that lets an unchanged rerun reuse its outputs | spec, blob_set, squashfs, initramfs, kernel, identity, safe_fs, error |
//! | `error` | [`Error`], what a command can fail with | check, spec, blob_set, squashfs, initramfs, kernel, safe_fs |
//! | [`check`] | `check`: what would stop a DomU from booting a `vxn/<arch>` set | blob_set, squashfs, initramfs, kernel, shell, safe_fs |
//! | [`spec`] | the JSON spec, raw then resolved | blob_set, squashfs, kernel |
//! | [`blob_set`] | the set's file names, SHA256SUMS, and the record compile leaves for deploy | safe_fs |
//! | [`squashfs`] | the engine: injects files into a squashfs image, keeping everything else; knows nothing of BitBake | identity, safe_fs |
//! | [`initramfs`] | gzip + newc cpio checks | - |
//! | [`kernel`] | kernel header magic checks | - |
//! | [`shell`] | which shell runs a script, and what in the script that shell cannot run | - |
//! | `identity` | which build of the tool is running ([`tool_identity`]) | safe_fs |
//! | `safe_fs` | lock, staged temporary files, commit with fsync, no-follow opens, sha256 | - |
//!
//! Nothing in the library prints: progress goes through callbacks and the rest through `log`.
//!
//! The command-line front end (`src/main.rs`) only parses arguments, calls into this crate and
//! reports errors.

pub mod blob_set;
pub mod check;
pub mod compile;
pub mod demo;
pub mod deploy;
mod error;
mod identity;
pub mod initramfs;
pub mod kernel;
mod safe_fs;
pub mod shell;
pub mod spec;
pub mod squashfs;

pub use error::Error;
pub use identity::tool_identity;
