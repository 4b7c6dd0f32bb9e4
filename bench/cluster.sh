#!/usr/bin/env bash
# bench/cluster.sh: build herald, then measure fan-out through each of
# BROKERS, RUNS times each, and print the median of each figure.
#
#   memory: one node; the publisher and all subscribers use it (the memory
#           broker cannot span nodes).
#   redis, nats: three nodes on the same Redis or NATS; the publisher on
#           node 1, the subscribers spread round-robin over nodes 2 and 3,
#           so every message crosses the broker before it reaches anyone.
#
# Each run starts fresh nodes and stops them after. The brokers alternate
# (run 1 of each, then run 2 of each, …) so that a slow drift of the
# machine touches them alike. Every node it starts is stopped when the
# script exits, however it exits.
#
# herald serve has no setting for the broker's key prefix, so every run
# uses the default one ("herald:" in Redis, "herald" in NATS) and the
# channel's history accumulates across runs (capped by the history size).
#
# Settings (environment): BROKERS="memory redis nats" RUNS=3 SUBS=1000
# RATE=100 DURATION=20s PORT=18290 (nodes listen on PORT, PORT+1, PORT+2)
# REDIS_URL=redis://127.0.0.1:6379/0 NATS_URL=nats://127.0.0.1:4222
# OUT=<new temp dir> QUIET_WAIT=120 (seconds to wait for the machine to be
# at least 85% idle before each run; 0 does not wait).
# MAX_OTHER_CORES=0.4 RETRIES=2: a run during which processes other than
# the nodes and the load tool used more CPU than that (other_cores, which
# includes the Redis or NATS server) is set aside and repeated, at most
# RETRIES times; "" keeps every run.
# Raw results: one JSON line per run in $OUT/BROKER.jsonl, the runs set
# aside in $OUT/BROKER.disturbed.jsonl; the CPU seconds each node used
# during each try (dial, publish and drain) in $OUT/BROKER.nodes.txt.
set -euo pipefail

BROKERS=${BROKERS:-memory redis nats}
RUNS=${RUNS:-3}
SUBS=${SUBS:-1000}
RATE=${RATE:-100}
DURATION=${DURATION:-20s}
PORT=${PORT:-18290}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
QUIET_WAIT=${QUIET_WAIT:-120}
MAX_OTHER_CORES=${MAX_OTHER_CORES-0.4}
RETRIES=${RETRIES:-2}
OUT=${OUT:-$(mktemp -d -t herald-cluster.XXXXXX)}
mkdir -p "$OUT"

cd "$(dirname "$0")/.."
BIN="$OUT/herald"
echo "building herald into $BIN" >&2
go build -o "$BIN" ./cmd/herald

. bench/lib.sh
trap stop_nodes EXIT
trap 'exit 130' INT TERM

# start_node starts one herald node on 127.0.0.1:$1 with broker $2 and
# waits until it listens.
start_node() {
	local port=$1 broker=$2 pid
	# --publish-rate 0: the load tool publishes from one connection as fast as
	# the scenario asks, past herald's default limit of 100/s per connection.
	"$BIN" serve --addr "127.0.0.1:$port" --broker "$broker" --log-level warn --publish-rate 0 2>>"$OUT/server.log" &
	pid=$!
	NODE_PIDS+=("$pid")
	wait_listen "$port" "$pid" "herald serve ($broker)"
}

# ticks prints the user+system CPU ticks of process $1.
ticks() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	s=${s##*) }
	read -r -a f <<<"$s"
	echo $((f[11] + f[12]))
}

run() { # broker name, run number
	local name=$1 i=$2 try line
	for try in $(seq 0 "$RETRIES"); do
		try_once "$name" "$i" "$try"
		line=$(tail -n 1 "$OUT/$name.$i.txt")
		if ((try < RETRIES)) && disturbed "$line"; then
			echo "== other processes used more than $MAX_OTHER_CORES cores during that run: repeating it" >&2
			echo "$line" >> "$OUT/$name.disturbed.jsonl"
			continue
		fi
		echo "$line" >> "$OUT/$name.jsonl"
		break
	done
}

try_once() { # broker name, run number, try
	local name=$1 i=$2 try=$3 url subs t0=() t1=() pid k line hz
	wait_quiet
	case $name in
	memory)
		start_node "$PORT" memory
		url="ws://127.0.0.1:$PORT/ws"
		subs=$url
		;;
	redis | nats)
		local broker=$REDIS_URL
		[[ $name == nats ]] && broker=$NATS_URL
		start_node "$PORT" "$broker"
		start_node "$((PORT + 1))" "$broker"
		start_node "$((PORT + 2))" "$broker"
		url="ws://127.0.0.1:$PORT/ws"
		subs="ws://127.0.0.1:$((PORT + 1))/ws,ws://127.0.0.1:$((PORT + 2))/ws"
		;;
	*) echo "unknown broker $name" >&2; exit 2 ;;
	esac
	echo "== $name run $i/$RUNS, try $((try + 1)) (nodes ${NODE_PIDS[*]})" >&2
	for pid in "${NODE_PIDS[@]}"; do t0+=("$(ticks "$pid")"); done
	local start=$SECONDS
	local more=${NODE_PIDS[*]:1}
	"$BIN" bench fanout -subs "$SUBS" -rate "$RATE" -duration "$DURATION" \
		-url "$url" -sub-urls "$subs" -pid "${NODE_PIDS[0]}" -node-pids "${more// /,}" | tee "$OUT/$name.$i.txt" >&2
	for pid in "${NODE_PIDS[@]}"; do t1+=("$(ticks "$pid")"); done
	hz=$(getconf CLK_TCK)
	line="run $i try $((try + 1)), $((SECONDS - start))s:"
	for k in "${!NODE_PIDS[@]}"; do
		line+=" node$((k + 1)) $(awk -v a="${t0[k]}" -v b="${t1[k]}" -v h="$hz" 'BEGIN {printf "%.1f", (b - a) / h}')s"
	done
	echo "$line CPU" >> "$OUT/$name.nodes.txt"
	stop_nodes
}

for name in $BROKERS; do
	case $name in
	memory | redis | nats) ;;
	*) echo "unknown broker $name" >&2; exit 2 ;;
	esac
	: > "$OUT/$name.jsonl"
	: > "$OUT/$name.nodes.txt"
	: > "$OUT/$name.disturbed.jsonl"
done
for i in $(seq "$RUNS"); do
	for name in $BROKERS; do
		run "$name" "$i"
	done
done

fields="delivered_per_sec server_cpu_us_per_delivery p50_ms p99_ms max_ms lost duplicates out_of_order errors subs_complete ack_p50_ms client_cores server_cores other_cores host_cpu_busy"
echo
echo "fan-out to $SUBS subscribers at $RATE/s for $DURATION; medians of $RUNS runs (raw results in $OUT)"
printf '  %-18s' broker
for name in $BROKERS; do printf ' %12s' "$name"; done
echo
for f in $fields; do
	printf '  %-18s' "$f"
	for name in $BROKERS; do printf ' %12s' "$(median "$OUT/$name.jsonl" "$f")"; done
	echo
done
echo "(server_cores: all herald nodes together; other_cores: everything but the nodes and the load tool,"
echo " the Redis or NATS server included; server_rss_kib is node 1's)"
for name in $BROKERS; do
	echo "$name: $(wc -l < "$OUT/$name.disturbed.jsonl") disturbed runs set aside; CPU of each node:"
	sed 's/^/  /' "$OUT/$name.nodes.txt"
done
