#!/usr/bin/env bash
# Run every test: sets up .venv (scripts/setup-env.sh), then pytest. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup-env.sh"
cd "$root"
exec .venv/bin/python -m pytest "$@"
