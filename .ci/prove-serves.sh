#!/usr/bin/env bash
# Proves a foundry-emulator serves: runs `RUN... serve --port 0` (RUN may be a chroot
# prefix), waits for its address, executes one job on the default echo runtime with CLIENT
# (a foundry-emulator binary outside any chroot), checks the exact answer, stops it with
# SIGTERM and checks it did not panic.
# Usage: prove-serves.sh WHERE CLIENT RUN...   (WHERE names the setting in messages)
set -euo pipefail
where=$1 client=$2
shift 2

out=$(mktemp)
"$@" serve --port 0 >"$out" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 1 100); do
    grep -q "listening on" "$out" && break
    sleep 0.1
done
url=$(sed -n 's/^foundry-emulator listening on //p' "$out" | head -n 1)
if [ -z "$url" ]; then
    echo "error: the binary did not start ($where):" >&2
    cat "$out" >&2
    exit 1
fi
"$client" wait-ready --emulator "$url" --timeout 10
got=$("$client" execute --emulator "$url" --rid ri.foundry.main.deployed-app.echo --query-type echo --query '{"proof":true}')
if [ "$got" != '{"proof":true}' ]; then
    echo "error: $where, the binary answered '$got'" >&2
    cat "$out" >&2
    exit 1
fi
kill -TERM "$pid"
wait "$pid"
if grep -q "panicked" "$out"; then
    echo "error: the binary panicked ($where):" >&2
    cat "$out" >&2
    exit 1
fi
echo "$where: served a sync execute and stopped on SIGTERM"
