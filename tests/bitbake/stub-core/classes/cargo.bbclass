# Stand-in for OE-core's cargo.bbclass: the variables a cargo recipe relies on. Building with
# cargo is OE-core's job and not imitated; the tests check the source the recipe hands it.
B = "${WORKDIR}/build"
CARGO_SRC_DIR ??= ""
CARGO_MANIFEST_PATH ??= "${S}/${CARGO_SRC_DIR}/Cargo.toml"
CARGO_BUILD_FLAGS = "-v --frozen --release --manifest-path=${CARGO_MANIFEST_PATH}"
