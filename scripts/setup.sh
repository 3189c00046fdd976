#!/usr/bin/env bash
# Create .venv and install impasto into it (torch pinned first: see requirements.txt).
# Run again, it installs nothing unless requirements.txt, pyproject.toml or the extras
# asked for changed (a stamp in .venv records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=".venv/.impasto-setup${extras:+-${extras//,/-}}"
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
# With no extras asked for, any earlier setup of these requirements will do (extras only add).
candidates="$stamp"
[ -n "$extras" ] || candidates="$(ls .venv/.impasto-setup* 2>/dev/null || true)"
for found in $candidates; do
    if [ -f "$found" ] && [ "$(cat "$found")" = "$want" ] && .venv/bin/python -c "import impasto" 2>/dev/null; then
        exit 0
    fi
done
.venv/bin/python -m pip install --quiet --upgrade pip || echo "setup: pip could not be upgraded (offline?); going on with $(.venv/bin/python -m pip --version | cut -d' ' -f1-2)" >&2
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
echo "$want" > "$stamp"
