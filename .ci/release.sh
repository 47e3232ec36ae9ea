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
trap 'rm -rf "$root"' EXIT
cp "dist/$name" "$root/foundry-emulator"
bash .ci/prove-serves.sh "in an empty root" "$bin" chroot "$root" /foundry-emulator
