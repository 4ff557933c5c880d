# Stand-in for OE-core's cargo-update-recipe-crates.bbclass (its do_update_crates needs a
# build; scripts/gen-crates-inc does the same offline).
CARGO_LOCK_SRC_DIR ??= "${S}"
