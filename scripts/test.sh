#!/usr/bin/env bash
# The whole suite, as `make test` and CI run it. Starts the real services the tests need and stops
# what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
export PATH="$PWD/$VENV/bin:$PATH"
export LLMSPEED_CACHE="${LLMSPEED_CACHE:-$HOME/.cache/llmspeed}"

cleanup() { :; }
trap 'cleanup' EXIT

ruff check src tests benchmarks
python -m pytest -q -p no:cacheprovider "$@"
