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

# Headless Chromium renders the backtest report in tests/report_html.rs.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing chromium (Debian package) for the report test"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "scripts/test.sh: chromium not found; the report rendering test will be skipped (it fails under CI=true)" >&2
  fi
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --all-targets "$@" 2>&1 | tee "$log" || status=$?
passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' "$log")
echo
echo "recur: $passed passed, $failed failed"
exit "$status"
