//! The integration test binary: one module per area, all run against the real `vxn-blobs`.

mod bad_input;
mod block_cache;
mod boot;
mod bounded;
mod check;
mod cli;
mod compile;
mod deploy;
mod engine;
mod faults;
mod fixtures;
mod hostile;
mod reuse;
mod spec;
mod util;
mod xen;
