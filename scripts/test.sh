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

# headless Chromium for the report.html browser test (tests/bench/test_report_browser.py); never `playwright install`
if [[ ! -x /usr/bin/chromium ]] && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null || echo "warning: could not install chromium" >&2
fi

# redis-server on loopback for the serving L2-cache tests (tests/serving/test_redis_l2.py); stops what it started
REDIS_PIDFILE=""
eval "_cleanup_before_redis() $(declare -f cleanup | tail -n +2)"
cleanup() {
  _cleanup_before_redis
  if [[ -n "$REDIS_PIDFILE" && -f "$REDIS_PIDFILE" ]]; then kill "$(cat "$REDIS_PIDFILE")" 2>/dev/null || true; fi
}
if [[ -z "${LLMSPEED_TEST_REDIS:-}" ]]; then
  if ! command -v redis-server >/dev/null && command -v apt-get >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; } || echo "warning: could not install redis-server" >&2
  fi
  if command -v redis-server >/dev/null; then
    REDIS_PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    REDIS_PIDFILE="$(mktemp -d)/redis.pid"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize yes \
      --pidfile "$REDIS_PIDFILE" >/dev/null
    for _ in $(seq 50); do [[ -f "$REDIS_PIDFILE" ]] && break; sleep 0.1; done
    export LLMSPEED_TEST_REDIS="redis://127.0.0.1:$REDIS_PORT/0"
  fi
fi

ruff check src tests benchmarks
python -m pytest -q -p no:cacheprovider "$@"
