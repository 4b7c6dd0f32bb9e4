#!/usr/bin/env bash
# bench/proxy.sh: what herald's connect proxy costs a connection. Builds
# herald, then RUNS times, the two taking turns: `herald bench churn`
# (connect, subscribe, close, as fast as C workers can) against a fresh
# `herald serve` without proxies, and against one with --proxy-connect
# pointing at `herald bench app` (an application that lets every connection
# in at once, as user "bench"). Prints the medians of each. Every process
# it starts is stopped when the script exits, however it exits.
#
# Settings (environment): RUNS=3 DURATION=10s C=50 PORT=18090 APP_PORT=18091
# OUT=<new temp dir> QUIET_WAIT=300 (seconds to wait for the machine to be
# mostly idle before each run; 0 does not wait).
# Raw results: one JSON line per run in $OUT/direct.jsonl and
# $OUT/proxied.jsonl. The app's CPU counts in other_cores.
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
C=${C:-50}
PORT=${PORT:-18090}
APP_PORT=${APP_PORT:-18091}
QUIET_WAIT=${QUIET_WAIT:-300}
MAX_OTHER_CORES=
OUT=${OUT:-$(mktemp -d -t herald-bench.XXXXXX)}
mkdir -p "$OUT"

cd "$(dirname "$0")/.."
BIN="$OUT/herald"
echo "building herald into $BIN" >&2
go build -o "$BIN" ./cmd/herald

. bench/lib.sh

APP_PID=
stop_all() {
	stop_server
	if [[ -n $APP_PID ]]; then
		kill -INT "$APP_PID" 2>/dev/null || true
		wait "$APP_PID" 2>/dev/null || true
		APP_PID=
	fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

"$BIN" bench app -addr "127.0.0.1:$APP_PORT" -user bench >>"$OUT/app.log" 2>&1 &
APP_PID=$!
wait_listen "$APP_PORT" "$APP_PID" "herald bench app"

run() { # name, run number, then serve's extra flags
	local name=$1 i=$2
	shift 2
	wait_quiet
	"$BIN" serve --addr "127.0.0.1:$PORT" --log-level warn "$@" 2>>"$OUT/server.log" &
	SERVER_PID=$!
	wait_listen "$PORT" "$SERVER_PID" "herald serve"
	echo "== $name run $i/$RUNS (server pid $SERVER_PID)" >&2
	"$BIN" bench churn -url "ws://127.0.0.1:$PORT/ws" -c "$C" -duration "$DURATION" -pid "$SERVER_PID" | tee "$OUT/$name.$i.txt" >&2
	stop_server
	tail -n 1 "$OUT/$name.$i.txt" >> "$OUT/$name.jsonl"
}

: > "$OUT/direct.jsonl"
: > "$OUT/proxied.jsonl"
for i in $(seq "$RUNS"); do
	run direct "$i"
	run proxied "$i" --proxy-connect "http://127.0.0.1:$APP_PORT/connect"
done

echo
echo "churn, $C workers for $DURATION: medians of $RUNS runs [min–max] (raw results in $OUT)"
for name in direct proxied; do
	echo "$name:"
	for f in cycles_per_sec connect_p50_ms connect_p99_ms errors server_cores client_cores other_cores; do
		printf '  %-16s %s [%s]\n' "$f" "$(median "$OUT/$name.jsonl" "$f")" "$(span "$OUT/$name.jsonl" "$f")"
	done
done
