#!/usr/bin/env bash
# recur's test command (the one README.md shows, and the one CI runs).
#
# Builds once in the release profile and runs every test target: unit tests,
# the PyTorch reference cases, finite-difference and learning tests, and the
# criterion benches in test mode (each bench body runs once, so they cannot rot).
# Ends with one summary line: "recur: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

shared="${RECUR_SHARED_DIR:-../shared}"
if [ ! -f "$shared/reference/lstm.json" ]; then
  echo "scripts/test.sh: reference cases not found in $shared/reference (set RECUR_SHARED_DIR)" >&2
  exit 1
fi
export RECUR_SHARED_DIR="$(cd "$shared" && pwd)"

# System packages: OpenSSL headers for librdkafka's TLS support (build), and
# headless Chromium, which renders the backtest report in tests/report_html.rs.
missing=()
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "scripts/test.sh: missing ${missing[*]}; install them (the report test fails under CI=true without chromium)" >&2
  fi
fi

# A real Kafka-protocol broker (tansu) on 127.0.0.1 for the Kafka tests.
if [ -z "${RECUR_TEST_BROKERS:-}" ]; then
  port="${RECUR_TEST_PORT:-19092}"
  export RECUR_BROKER_DIR="${RECUR_BROKER_DIR:-$(mktemp -d)}"
  eval "$(scripts/broker.sh start "$port")"
  export RECUR_TEST_BROKERS
  trap 'scripts/broker.sh stop >/dev/null 2>&1 || true' EXIT
fi

log="$(mktemp)"
trap 'rm -f "$log"; [ -n "${RECUR_BROKER_DIR:-}" ] && scripts/broker.sh stop >/dev/null 2>&1 || true' EXIT
status=0
cargo test --release --all-targets "$@" 2>&1 | tee "$log" || status=$?
passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' "$log")
echo
echo "recur: $passed passed, $failed failed"
exit "$status"
