#!/usr/bin/env bash
# The release recipe: build the static binary (.ci/static-build.sh decides musl or static
# glibc and proves it serves), copy it to dist/ with a SHA256SUMS file, and prove it again
# in an empty root (no /lib, /etc, /dev or /proc: a chroot holding only the binary), where
# it must still serve a sync execute. Needs root for chroot (CI runs as root).
# .github/workflows/release.yml runs exactly this on a tag and attaches dist/ to the release.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash .ci/static-build.sh
bin=$(ls target/x86_64-unknown-linux-musl/release/foundry-emulator 2>/dev/null \
      || ls target/x86_64-unknown-linux-gnu/release/foundry-emulator)
version=$("$bin" --version | awk '{print $2}')
target=$(basename "$(dirname "$(dirname "$bin")")")
mkdir -p dist
name="foundry-emulator-$version-$target"
cp "$bin" "dist/$name"
strip "dist/$name" 2>/dev/null || true
(cd dist && sha256sum "$name" > SHA256SUMS && cat SHA256SUMS)

root=$(mktemp -d)
out=$(mktemp)
cp "dist/$name" "$root/foundry-emulator"
chroot "$root" /foundry-emulator serve --port 0 >"$out" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$root" "$out"' EXIT
for _ in $(seq 1 100); do
    grep -q "listening on" "$out" && break
    sleep 0.1
done
url=$(sed -n 's/^foundry-emulator listening on //p' "$out" | head -n 1)
if [ -z "$url" ]; then
    echo "error: the binary did not start in an empty root:" >&2
    cat "$out" >&2
    exit 1
fi
"$bin" wait-ready --emulator "$url" --timeout 10
got=$("$bin" execute --emulator "$url" --rid ri.foundry.main.deployed-app.echo --query-type echo --query '{"empty_root":true}')
if [ "$got" != '{"empty_root":true}' ]; then
    echo "error: in an empty root the binary answered '$got'" >&2
    cat "$out" >&2
    exit 1
fi
kill -TERM "$pid"
wait "$pid"
if grep -q "panicked" "$out"; then
    echo "error: the binary panicked in an empty root:" >&2
    cat "$out" >&2
    exit 1
fi
echo "release: dist/$name served a sync execute in an empty root"
