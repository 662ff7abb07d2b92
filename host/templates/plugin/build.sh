#!/usr/bin/env bash
# Builds this plugin into a WebAssembly component and prints its path.
#
#   ./build.sh [extra cargo build args]
#
# Two routes to the wasm32-wasip2 target, picked in this order:
#   1. rustup's toolchain has the target (`rustup target add wasm32-wasip2`);
#   2. the offline Debian toolchain that `cargo xtask build` in a sluice
#      checkout sets up in $WASM_TOOLCHAIN_HOME (default /opt/wasm-toolchain):
#      Debian's rustc with a prebuilt wasm32-wasip2 std.
# Cargo output goes to stderr; the component's path is the one line on stdout.
set -euo pipefail
cd "$(dirname "$0")"
TARGET=wasm32-wasip2
PREFIX=${WASM_TOOLCHAIN_HOME:-/opt/wasm-toolchain}

if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  # rustup's own cargo and rustc, so a Debian cargo earlier on PATH cannot win.
  CARGO=$(rustup which cargo)
  RUSTC=$(rustup which rustc) "$CARGO" build --release --target "$TARGET" "$@" >&2
elif [[ -d "$PREFIX/sysroot/lib/rustlib/$TARGET/lib" ]]; then
  env -u RUSTFLAGS -u CARGO PATH="$PREFIX/bin:/usr/bin:$PATH" \
    RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
    /usr/bin/cargo --config "target.$TARGET.rustflags=['--sysroot=$PREFIX/sysroot']" \
    build --release --target "$TARGET" "$@" >&2
else
  echo "build.sh: no $TARGET toolchain. Either 'rustup target add $TARGET', or run" >&2
  echo "'cargo xtask build' once in a sluice checkout (it installs the offline Debian" >&2
  echo "toolchain in $PREFIX)." >&2
  exit 1
fi
echo "${CARGO_TARGET_DIR:-$PWD/target}/$TARGET/release/{{crate_name}}.wasm"
