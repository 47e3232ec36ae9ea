#!/usr/bin/env bash
# Builds the static release binary and proves it runs (.ci/prove-serves.sh: start it on a free
# port, execute one job on the default echo runtime, stop it).
# x86_64-unknown-linux-musl when that target is installed, else glibc with crt-static.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    target=x86_64-unknown-linux-musl
    cargo build --release --target "$target"
else
    target=x86_64-unknown-linux-gnu
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$target"
fi
bin="target/$target/release/foundry-emulator"
echo "static binary: $bin ($(stat -c %s "$bin") bytes, $target)"
file "$bin" 2>/dev/null || true
if ldd "$bin" 2>&1 | grep -q "=>"; then
    echo "error: $bin is dynamically linked" >&2
    exit 1
fi

bash .ci/prove-serves.sh "static binary" "$bin" "$bin"
