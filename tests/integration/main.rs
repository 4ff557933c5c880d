//! The integration test binary: one module per area, all run against the real `vxn-blobs`.

mod bad_input;
mod cli;
mod compile;
mod deploy;
mod engine;
mod fixtures;
mod spec;
mod util;
