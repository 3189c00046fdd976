#!/usr/bin/env bash
# Set up and run the demo. Where there is no internet but a ../shared/weights folder
# (the machines this project is built on), the weights are read from there.
# The picture is written where the script is run from, like any command's output.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
(cd "$root" && bash scripts/setup.sh)
if [ -z "${IMPASTO_WEIGHTS:-}" ] && [ -d "$root/../shared/weights" ]; then
    export IMPASTO_WEIGHTS="$(cd "$root/../shared/weights" && pwd)"
fi
exec "$root/.venv/bin/impasto" demo "$@"
