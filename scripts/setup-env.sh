#!/usr/bin/env bash
# Create .venv with tqgguf (and its C extension) installed editable, plus the test tools.
# Idempotent: a second run only reinstalls when pyproject.toml, setup.py or cpp/ changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
stamp=.venv/.tqgguf-stamp
want=$(find pyproject.toml setup.py cpp -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip >&2
    .venv/bin/python -m pip install --quiet -e ".[test]" >&2
    echo "$want" > "$stamp"
fi
