//! The `vxn-blobs` command: parses arguments, calls the library and reports errors.

fn main() {}
