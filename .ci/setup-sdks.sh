#!/usr/bin/env bash
# Installs the real Palantir clients that tests/sdk.rs runs against the emulator:
#   - Python: foundry-compute-modules==0.34.0 and foundry-platform-sdk==1.111.0 (its OAuth2
#     ConfidentialClientAuth) into .venv at the repository root
#   - npm:    @palantir/compute-module 0.2.7 and @osdk/oauth 1.13.0 into fixtures/ts/node_modules
#     (from package-lock.json)
# Idempotent: safe to run again; it only installs what is missing or different.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

PY_SDK="foundry-compute-modules==0.34.0"
PY_PLATFORM_SDK="foundry-platform-sdk==1.111.0"

# Python (the SDK needs >=3.10).
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -m pip show foundry-compute-modules 2>/dev/null | grep -qx 'Version: 0.34.0'; then
    .venv/bin/python -m pip install --quiet "$PY_SDK"
fi
if ! .venv/bin/python -m pip show foundry-platform-sdk 2>/dev/null | grep -qx 'Version: 1.111.0'; then
    .venv/bin/python -m pip install --quiet "$PY_PLATFORM_SDK"
fi
.venv/bin/python -c 'import foundry_sdk'
# Plain `import compute_modules` (importing .annotations would start a module at exit).
.venv/bin/python -c 'import compute_modules'

# npm: exactly what package-lock.json says.
cd fixtures/ts
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund
else
    npm install --no-audit --no-fund
fi
node -e 'require("@palantir/compute-module"); require("@sinclair/typebox")'
node --input-type=module -e 'import "@osdk/oauth"'

echo "SDKs ready: foundry-compute-modules $("$root/.venv/bin/python" -m pip show foundry-compute-modules | grep '^Version' | cut -d' ' -f2), foundry-platform-sdk $("$root/.venv/bin/python" -m pip show foundry-platform-sdk | grep '^Version' | cut -d' ' -f2), @palantir/compute-module $(node -p 'require("@palantir/compute-module/package.json").version'), @osdk/oauth $(node -p 'require("./node_modules/@osdk/oauth/package.json").version')"
