#!/usr/bin/env bash
# bench/compare.sh: herald side by side with the peers users would pick
# instead, in one run, with the same load tool (`herald bench`):
#
#   herald      herald serve (idle: herald.v1; fan-out: herald.v1.jsonl)
#   ws          a Node broadcast server on npm's ws (on message, send it to
#               every open client), written into $OUT at run time
#   centrifugo  Centrifugo v5.4.9, built from the Go module proxy, insecure
#               client mode with client publishing allowed
#
# Scenarios (SCENARIOS, any of):
#   idle     N subscribed connections held; memory per connection, connect rate
#   closed   fan-out to SUBS subscribers, closed loop: at most WINDOW messages
#            not yet delivered to every subscriber; delivered messages/s
#   rate     fan-out to SUBS subscribers at RATE publishes/s; latency, loss
#
# Every run starts a fresh server and stops it after; the servers alternate
# (herald, ws, centrifugo, herald, …) and so do the scenarios, RUNS times,
# so that a drift of the machine touches them alike. A run during which
# other processes used more than MAX_OTHER_CORES is set aside and repeated,
# at most RETRIES times. At the end: medians, min–max, and herald/peer.
# Nothing of the peers is kept in the repository: they are fetched (npm,
# the Go module proxy) into OUT.
#
# Settings (environment): SCENARIOS="idle closed rate" SERVERS="herald ws
# centrifugo" RUNS=3 N=10000 SUBS=1000 WINDOW=100 RATE=100 DURATION=20s
# PORT=18390 OUT=<new temp dir> QUIET_WAIT=120 MAX_OTHER_CORES=0.2 RETRIES=2
# CENTRIFUGO=<a centrifugo binary to use instead of building one>
# WS_VERSION=8.23.0 CENTRIFUGO_VERSION=v5.4.9
# Raw results: $OUT/SCENARIO.SERVER.jsonl, one JSON line per run.
set -euo pipefail

SCENARIOS=${SCENARIOS:-idle closed rate}
SERVERS=${SERVERS:-herald ws centrifugo}
RUNS=${RUNS:-3}
N=${N:-10000}
SUBS=${SUBS:-1000}
WINDOW=${WINDOW:-100}
RATE=${RATE:-100}
DURATION=${DURATION:-20s}
PORT=${PORT:-18390}
QUIET_WAIT=${QUIET_WAIT:-120}
MAX_OTHER_CORES=${MAX_OTHER_CORES-0.2}
RETRIES=${RETRIES:-2}
WS_VERSION=${WS_VERSION:-8.23.0}
CENTRIFUGO_VERSION=${CENTRIFUGO_VERSION:-v5.4.9}
OUT=${OUT:-$(mktemp -d -t herald-compare.XXXXXX)}
mkdir -p "$OUT"

cd "$(dirname "$0")/.."
. bench/lib.sh

BIN="$OUT/herald"
echo "building herald into $BIN" >&2
go build -o "$BIN" ./cmd/herald

# The peers.
if [[ " $SERVERS " == *" ws "* ]]; then
	if [[ ! -d $OUT/node/node_modules/ws ]]; then
		echo "installing ws@$WS_VERSION into $OUT/node" >&2
		npm install --prefix "$OUT/node" --no-audit --no-fund --silent "ws@$WS_VERSION" >&2
	fi
	cat > "$OUT/node/server.mjs" <<'EOF'
// The broadcast server people write with ws: every message to every open client.
import { WebSocketServer, WebSocket } from 'ws';
const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.env.PORT) });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    for (const c of wss.clients) if (c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
  });
});
EOF
fi
if [[ " $SERVERS " == *" centrifugo "* ]]; then
	if [[ -z ${CENTRIFUGO:-} ]]; then
		CENTRIFUGO=$OUT/centrifugo
		if [[ ! -x $CENTRIFUGO ]]; then
			echo "building Centrifugo $CENTRIFUGO_VERSION into $CENTRIFUGO (a few minutes the first time)" >&2
			dir=$(go mod download -json "github.com/centrifugal/centrifugo/v5@$CENTRIFUGO_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
			(cd "$dir" && go build -o "$CENTRIFUGO" -ldflags "-X github.com/centrifugal/centrifugo/v5/internal/build.Version=${CENTRIFUGO_VERSION#v}" .)
		fi
	fi
	cat > "$OUT/centrifugo.json" <<'EOF'
{
  "client_insecure": true,
  "allow_subscribe_for_client": true,
  "allow_publish_for_client": true,
  "allowed_origins": ["*"],
  "log_level": "error"
}
EOF
fi

trap stop_server EXIT
trap 'exit 130' INT TERM

# start_server starts server $1 on PORT and waits until it listens.
start_server() {
	case $1 in
	herald)
		# No per-connection publish limit, no connection cap: the load tool
		# publishes from one connection and holds many from one address.
		"$BIN" serve --addr "127.0.0.1:$PORT" --log-level warn --publish-rate 0 --max-connections 0 2>>"$OUT/server.log" &
		;;
	ws) PORT=$PORT node "$OUT/node/server.mjs" 2>>"$OUT/server.log" & ;;
	centrifugo) "$CENTRIFUGO" --config "$OUT/centrifugo.json" --address 127.0.0.1 --port "$PORT" 2>>"$OUT/server.log" >&2 & ;;
	esac
	SERVER_PID=$!
	wait_listen "$PORT" "$SERVER_PID" "$1"
}

# bench_args prints the load tool's arguments for scenario $1 on server $2.
bench_args() {
	local proto url
	case $2 in
	herald) url="ws://127.0.0.1:$PORT/ws"; proto=jsonl; [[ $1 == idle ]] && proto=json ;;
	ws) url="ws://127.0.0.1:$PORT/"; proto=ws ;;
	centrifugo) url="ws://127.0.0.1:$PORT"; proto=centrifugo ;;
	esac
	case $1 in
	idle) echo "idle -proto $proto -url $url -n $N" ;;
	closed) echo "fanout -proto $proto -url $url -subs $SUBS -window $WINDOW -duration $DURATION" ;;
	rate) echo "fanout -proto $proto -url $url -subs $SUBS -rate $RATE -duration $DURATION" ;;
	esac
}

run() { # scenario, server, run number
	local scenario=$1 server=$2 i=$3 try line out
	for try in $(seq 0 "$RETRIES"); do
		wait_quiet
		start_server "$server"
		out="$OUT/$scenario.$server.$i.txt"
		echo "== $scenario on $server, run $i/$RUNS, try $((try + 1)) (pid $SERVER_PID)" >&2
		# shellcheck disable=SC2046 # the arguments are words
		"$BIN" bench $(bench_args "$scenario" "$server") -pid "$SERVER_PID" | tee "$out" >&2
		stop_server
		line=$(tail -n 1 "$out")
		if ((try < RETRIES)) && disturbed "$line"; then
			echo "== other processes used more than $MAX_OTHER_CORES cores: repeating" >&2
			echo "$line" >> "$OUT/$scenario.$server.disturbed.jsonl"
			continue
		fi
		echo "$line" >> "$OUT/$scenario.$server.jsonl"
		break
	done
}

for scenario in $SCENARIOS; do
	case $scenario in
	idle | closed | rate) ;;
	*) echo "unknown scenario $scenario" >&2; exit 2 ;;
	esac
	for server in $SERVERS; do
		: > "$OUT/$scenario.$server.jsonl"
	done
done
for i in $(seq "$RUNS"); do
	for scenario in $SCENARIOS; do
		for server in $SERVERS; do
			run "$scenario" "$server" "$i"
		done
	done
done

echo
echo "medians of $RUNS runs, [min–max], and herald/peer (raw results in $OUT):"
for scenario in $SCENARIOS; do
	case $scenario in
	idle)
		echo "idle: $N subscribed connections"
		fields="mem_per_conn_kib connect_rate dropped errors"
		;;
	closed)
		echo "closed: $SUBS subscribers, window $WINDOW, $DURATION"
		fields="delivered_per_sec p50_ms p99_ms lost server_cores client_cores other_cores"
		;;
	rate)
		echo "rate: $SUBS subscribers at $RATE/s, $DURATION"
		fields="delivered_per_sec p50_ms p99_ms max_ms lost server_cores other_cores"
		;;
	esac
	printf '  %-18s' ""
	for server in $SERVERS; do printf ' %-26s' "$server"; done
	for server in $SERVERS; do [[ $server == herald ]] || printf ' %-16s' "herald/$server"; done
	echo
	for f in $fields; do
		printf '  %-18s' "$f"
		for server in $SERVERS; do
			printf ' %-26s' "$(median "$OUT/$scenario.$server.jsonl" "$f") [$(span "$OUT/$scenario.$server.jsonl" "$f")]"
		done
		h=$(median "$OUT/$scenario.herald.jsonl" "$f" 2>/dev/null || echo n/a)
		for server in $SERVERS; do
			[[ $server == herald ]] && continue
			p=$(median "$OUT/$scenario.$server.jsonl" "$f")
			printf ' %-16s' "$(awk -v h="$h" -v p="$p" 'BEGIN {if (p + 0 == 0 || h == "n/a") print "-"; else printf "%.2f", h / p}')"
		done
		echo
	done
done
