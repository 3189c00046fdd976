#!/usr/bin/env bash
# Create .venv and install impasto into it (torch pinned first: see requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
