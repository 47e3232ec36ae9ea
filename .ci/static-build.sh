#!/usr/bin/env bash
# Builds the static release binary and proves it runs: start it on a free port, wait until
# it is ready, execute one job on the default echo runtime, stop it.
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

out=$(mktemp)
"$bin" serve --port 0 >"$out" 2>/dev/null &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 1 100); do
    grep -q "listening on" "$out" && break
    sleep 0.1
done
url=$(sed -n 's/^foundry-emulator listening on //p' "$out" | head -n 1)
"$bin" wait-ready --emulator "$url" --timeout 10
got=$("$bin" execute --emulator "$url" --rid ri.foundry.main.deployed-app.echo --query-type echo --query '{"static":true}')
if [ "$got" != '{"static":true}' ]; then
    echo "error: the static binary answered '$got'" >&2
    exit 1
fi
kill -TERM "$pid"
wait "$pid"
echo "static binary served a sync execute and stopped on SIGTERM"
