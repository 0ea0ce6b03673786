#!/usr/bin/env bash
# The suite against the lowest versions pyproject.toml allows for everything the SDK
# ships (runtime dependencies and the http2/sandbox/cli/aiohttp/pytest extras), in a
# venv of its own (.venv-lowest, or $VENV). Extra arguments go to pytest.
#
#   bash scripts/test-lowest-pins.sh            # the whole suite
#   bash scripts/test-lowest-pins.sh -x tests/test_client.py
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv-lowest}
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT

python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" scripts/lowest_pins.py > "$constraints"
echo "+ pinned: $(tr '\n' ' ' < "$constraints")"
"$venv/bin/python" -m pip install -q -c "$constraints" -e '.[dev]'
"$venv/bin/python" -m pip check
"$venv/bin/python" -m pytest -q "$@"
