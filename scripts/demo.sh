#!/usr/bin/env bash
# Set up and run the demo. Where there is no internet but a ../shared/weights folder
# (the machines this project is built on), the weights are read from there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${IMPASTO_WEIGHTS:-}" ] && [ -d ../shared/weights ]; then
    export IMPASTO_WEIGHTS="$(cd ../shared/weights && pwd)"
fi
exec .venv/bin/impasto demo "$@"
