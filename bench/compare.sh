#!/usr/bin/env bash
# bench/compare.sh: herald side by side with the peers users would pick
# instead, in one run, with the same load tool (`herald bench`):
#
#   herald       herald serve (idle: herald.v1; fan-out: herald.v1.jsonl)
#   ws           a Node broadcast server on npm's ws (on message, send it to
#                every open client), written into $OUT at run time
#   centrifugo   Centrifugo (v6.9.1; CENTRIFUGO_VERSION=v5.4.9 for the
#                last v5), built from the Go module proxy, insecure client
#                mode with client publishing allowed
#
# MODE=cluster runs two nodes of each server instead, the publisher on
# node 1 and every subscriber on node 2, so every message crosses the
# broker before it reaches anyone:
#
#   herald       two herald serve on Redis (REDIS_URL)
#   herald-nats  two herald serve on NATS JetStream (NATS_URL)
#   centrifugo   two Centrifugo on its Redis engine (REDIS_URL), with
#                history (100 messages, 10 minutes) and forced recovery on
#                the benchmark channel, the guarantee herald's history gives
#
# Node's ws has no cluster mode and is left out of it. Each run uses a
# channel of its own (bench-RUNID-…), so no history carries over from run
# to run, and Centrifugo a key prefix of its own; nothing else in Redis or
# NATS is touched. Their history expires after 11 minutes at the latest;
# at the end the script deletes its own Redis keys (when redis-cli is
# there). server_cores and server_cpu_us_per_delivery count both nodes;
# broker_cores is the Redis or NATS server's CPU (found by its port with
# ss), kept out of other_cores.
#
# PIN=1 starts every server process (each node) under `taskset -c 0` and
# the load tool under `taskset -c 1`, so that the server's CPU and latency
# are measured without the load tool on its core. Go sizes GOMAXPROCS from
# the CPUs it may run on (herald and Centrifugo get 1 then); Node runs its
# JavaScript on one thread anyway. Redis and NATS are not pinned.
#
# STEER=1 (with PIN=1) also steers loopback's receive processing to CPU 1
# (receive packet steering: /sys/class/net/lo/queues/rx-0/rps_cpus, root
# only, restored at exit). On loopback the kernel otherwise runs the
# receiving side of every segment a server sends — the subscriber's TCP
# receive, queueing and wake-up — on the sending core, in the server's
# time: a third of a server's CPU per delivery at 50 publishes/s is the
# load tool's receive path. Steered, the server's core does what it would
# do with its clients on other machines: the sending side only, plus an
# inter-processor interrupt when CPU 1's backlog was empty.
#
# SPIN=1 (with PIN=1) has the load tool read its subscribers by polling
# without sleeping (`herald bench fanout -spin`), its core whole. A reader
# that sleeps must be woken by each segment that reaches it, and on
# loopback the sending core does that waking — on a virtual machine an
# inter-processor interrupt, charged to the server — while the tool's own
# time per delivery (the read and its wake-up, about 4 µs at 50/s) bounds
# the latency it can see: a server faster than that has its p99 set by
# the tool. A spinning reader is never woken and reads as the data comes.
#
# EPOLL=1 has the load tool read its subscribers from epoll sets, a
# goroutine per processor that sleeps until some of them have something
# (`herald bench fanout -epoll`), instead of a goroutine per subscriber:
# a wake-up, a park and a read that finds nothing less per segment. On
# this machine the tool shares the cores with the servers, and what it
# spends per delivery is taken from them; in a closed loop the server
# that sends in the fewest segments loses least to it.
#
# STAMPS=1 (with SPIN=1 or EPOLL=1) has the load tool time each message by
# when its segment reached the tool's socket — the kernel's receive time
# (`herald bench fanout -kernel-stamps`): on loopback, when the server's
# send reached the receiving side — not by when the tool got to read it.
# The tool reads its subscribers one after the other; a server that sends
# a fan-out faster than the tool reads it otherwise has its latency set by
# the tool's queue of reads. The latency then is the server's: from the
# publish to the send, the same for every server.
#
# Scenarios (SCENARIOS, any of):
#   idle     N subscribed connections held; memory per connection, connect
#            rate (one node only). N may list several counts, e.g.
#            N="5000 10000 19900", to see whether memory grows linearly:
#            each count is a case of its own (idle-5000, …) and a growth
#            table follows the others
#   closed   fan-out to SUBS subscribers, closed loop: at most WINDOW messages
#            not yet delivered to every subscriber; delivered messages/s
#   rate     fan-out to SUBS subscribers at RATE publishes/s; latency, loss
# Every fan-out reports server_cpu_us_per_delivery: the server's CPU time
# (all nodes) from the first publish to the last, in microseconds, over the
# deliveries received in that same interval.
#
# Every run starts fresh servers and stops them after; the servers
# alternate (herald, ws, centrifugo, herald, …) and so do the scenarios,
# RUNS times, so that a drift of the machine touches them alike. A run
# during which other processes used more than MAX_OTHER_CORES is set aside
# and repeated, at most RETRIES times. At the end: medians, [min–max], and
# herald/peer. Nothing of the peers is kept in the repository: they are
# fetched (npm, the Go module proxy) into OUT.
#
# Open files: a process here may hold 20,000 (the hard limit); Go raises
# its soft limit to the hard one at start, so herald, Centrifugo and the
# load tool each get them all. N=19900 leaves each about a hundred for its
# listener, poller, standard streams and /metrics.
#
# Settings (environment): MODE=one (or cluster) PIN=0 (or 1) STEER=0 (or 1)
# SPIN=0 (or 1) EPOLL=0 (or 1) STAMPS=0 (or 1)
# SCENARIOS="idle closed rate" (cluster: "closed rate")
# SERVERS="herald ws centrifugo" (cluster: "herald herald-nats centrifugo")
# RUNS=3 N=10000 SUBS=1000 WINDOW=100 RATE=100 DURATION=20s
# PORT=18390 (nodes on PORT and PORT+1) OUT=<new temp dir> QUIET_WAIT=120
# MAX_OTHER_CORES=0.2 RETRIES=2 REDIS_URL=redis://127.0.0.1:6379/0
# NATS_URL=nats://127.0.0.1:4222 WS_VERSION=8.23.0
# CENTRIFUGO_VERSION=v6.9.1 CENTRIFUGO=<a centrifugo binary of that
# version to use instead of building one>
# Raw results: $OUT/CASE.SERVER.jsonl (CASE: idle-N, closed, rate), one
# JSON line per run; the runs set aside in $OUT/CASE.SERVER.disturbed.jsonl.
set -euo pipefail

MODE=${MODE:-one}
PIN=${PIN:-0}
STEER=${STEER:-0}
SPIN=${SPIN:-0}
EPOLL=${EPOLL:-0}
STAMPS=${STAMPS:-0}
RPS=/sys/class/net/lo/queues/rx-0/rps_cpus
case $MODE in
one)
	SCENARIOS=${SCENARIOS:-idle closed rate}
	SERVERS=${SERVERS:-herald ws centrifugo}
	;;
cluster)
	SCENARIOS=${SCENARIOS:-closed rate}
	SERVERS=${SERVERS:-herald herald-nats centrifugo}
	;;
*) echo "MODE must be one or cluster, not $MODE" >&2; exit 2 ;;
esac
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
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
WS_VERSION=${WS_VERSION:-8.23.0}
CENTRIFUGO_VERSION=${CENTRIFUGO_VERSION:-v6.9.1}
CENTRIFUGO_MAJOR=${CENTRIFUGO_VERSION%%.*}
OUT=${OUT:-$(mktemp -d -t herald-compare.XXXXXX)}
mkdir -p "$OUT"
# RUNID names this script's channels and keys in the shared Redis and NATS.
RUNID=$(date +%s)-$$

cd "$(dirname "$0")/.."
. bench/lib.sh

for scenario in $SCENARIOS; do
	case $MODE.$scenario in
	one.idle | *.closed | *.rate) ;;
	*) echo "unknown scenario $scenario (in MODE=$MODE)" >&2; exit 2 ;;
	esac
done
for server in $SERVERS; do
	case $MODE.$server in
	one.herald | one.ws | *.centrifugo | cluster.herald | cluster.herald-nats) ;;
	*) echo "unknown server $server (in MODE=$MODE)" >&2; exit 2 ;;
	esac
done
case $CENTRIFUGO_MAJOR in
v5 | v6) ;;
*) echo "CENTRIFUGO_VERSION $CENTRIFUGO_VERSION: want v5.x.y or v6.x.y" >&2; exit 2 ;;
esac
SERVER_PIN=()
TOOL_PIN=()
if [[ $PIN == 1 ]]; then
	if (($(nproc) < 2)); then
		echo "PIN=1 needs two CPUs, this process may use $(nproc)" >&2
		exit 2
	fi
	SERVER_PIN=(taskset -c 0)
	TOOL_PIN=(taskset -c 1)
fi
READ_FLAG=
if [[ $SPIN == 1 ]]; then
	if [[ $PIN != 1 ]]; then
		echo "SPIN=1 needs PIN=1: a spinning load tool takes a core whole" >&2
		exit 2
	fi
	READ_FLAG=" -spin"
fi
if [[ $EPOLL == 1 ]]; then
	if [[ $SPIN == 1 ]]; then
		echo "SPIN=1 and EPOLL=1 are two ways for the tool to read: choose one" >&2
		exit 2
	fi
	READ_FLAG=" -epoll"
fi
if [[ $STAMPS == 1 ]]; then
	if [[ -z $READ_FLAG ]]; then
		echo "STAMPS=1 needs SPIN=1 or EPOLL=1: the epoll sets take the kernel's receive times" >&2
		exit 2
	fi
	READ_FLAG+=" -kernel-stamps"
fi
RPS_BEFORE=
if [[ $STEER == 1 ]]; then
	if [[ $PIN != 1 || ! -w $RPS ]]; then
		echo "STEER=1 needs PIN=1 and a writable $RPS (root)" >&2
		exit 2
	fi
	RPS_BEFORE=$(cat "$RPS")
fi

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
if [[ " $SERVERS " == *" centrifugo "* && -z ${CENTRIFUGO:-} ]]; then
	CENTRIFUGO=$OUT/centrifugo-$CENTRIFUGO_VERSION
	if [[ ! -x $CENTRIFUGO ]]; then
		echo "building Centrifugo $CENTRIFUGO_VERSION into $CENTRIFUGO (a few minutes the first time)" >&2
		module=github.com/centrifugal/centrifugo/$CENTRIFUGO_MAJOR
		dir=$(go mod download -json "$module@$CENTRIFUGO_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		(cd "$dir" && go build -o "$CENTRIFUGO" -ldflags "-X $module/internal/build.Version=${CENTRIFUGO_VERSION#v}" .)
	fi
fi

# centrifugo_config writes the config of a Centrifugo node on port $1 into
# $OUT and prints its path; in cluster mode it joins the Redis engine
# under prefix $2.
centrifugo_config() {
	local port=$1 prefix=$2 file="$OUT/centrifugo-$1.json" engine="" history=""
	if [[ $CENTRIFUGO_MAJOR == v5 ]]; then
		if [[ $MODE == cluster ]]; then
			engine=",\"engine\":\"redis\",\"redis_address\":\"$REDIS_URL\",\"redis_prefix\":\"$prefix\""
			history=',"history_size":100,"history_ttl":"600s","history_meta_ttl":"660s","force_recovery":true'
		fi
		cat > "$file" <<EOF
{"address":"127.0.0.1","port":$port,"log_level":"error","client_insecure":true,"allowed_origins":["*"],
"allow_subscribe_for_client":true,"allow_publish_for_client":true$engine$history}
EOF
	else
		if [[ $MODE == cluster ]]; then
			engine=",\"engine\":{\"type\":\"redis\",\"redis\":{\"address\":[\"$REDIS_URL\"],\"prefix\":\"$prefix\"}}"
			history=',"history_size":100,"history_ttl":"600s","history_meta_ttl":"660s","force_recovery":true'
		fi
		cat > "$file" <<EOF
{"http_server":{"address":"127.0.0.1","port":$port},"log":{"level":"error"},
"client":{"insecure":true,"allowed_origins":["*"]},
"channel":{"without_namespace":{"allow_subscribe_for_client":true,"allow_publish_for_client":true$history}},
"http_api":{"key":"bench-$RUNID"}$engine}
EOF
	fi
	echo "$file"
}

# cleanup stops the nodes and deletes what the runs kept in Redis under
# this script's RUNID: herald's keys of its channels, Centrifugo's prefix.
cleanup() {
	stop_nodes
	[[ -n $RPS_BEFORE ]] && { echo "$RPS_BEFORE" > "$RPS" || true; }
	[[ $MODE == cluster ]] && command -v redis-cli >/dev/null || return 0
	local pattern
	for pattern in "herald:{bench-$RUNID-*" "centrifugo-bench-$RUNID*"; do
		redis-cli -u "$REDIS_URL" --scan --pattern "$pattern" | xargs -r redis-cli -u "$REDIS_URL" unlink >/dev/null || true
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[[ $STEER == 1 ]] && echo 2 > "$RPS" # CPU 1's bit

# start_node starts node $2 (1 or 2) of server $1 on PORT+$2-1 and waits
# until it listens; its pid joins NODE_PIDS.
start_node() {
	local server=$1 port=$((PORT + $2 - 1)) broker=memory config
	case $server in
	herald | herald-nats)
		[[ $MODE == cluster ]] && broker=$REDIS_URL
		[[ $server == herald-nats ]] && broker=$NATS_URL
		# No per-connection publish limit, no connection cap: the load tool
		# publishes from one connection and holds many from one address.
		# History as herald's defaults, spelled out: Centrifugo's is set alike.
		"${SERVER_PIN[@]}" "$BIN" serve --addr "127.0.0.1:$port" --broker "$broker" --log-level warn \
			--publish-rate 0 --max-connections 0 --history-size 100 --history-ttl 10m 2>>"$OUT/server.log" &
		;;
	ws) PORT=$port "${SERVER_PIN[@]}" node "$OUT/node/server.mjs" 2>>"$OUT/server.log" & ;;
	centrifugo)
		config=$(centrifugo_config "$port" "centrifugo-bench-$RUNID")
		"${SERVER_PIN[@]}" "$CENTRIFUGO" --config "$config" 2>>"$OUT/server.log" >&2 &
		;;
	esac
	NODE_PIDS+=("$!")
	wait_listen "$port" "$!" "$server"
}

# url prints where the load tool dials node $2 of server $1.
url() {
	local port=$((PORT + $2 - 1))
	case $1 in
	herald | herald-nats) echo "ws://127.0.0.1:$port/ws" ;;
	ws) echo "ws://127.0.0.1:$port/" ;;
	centrifugo) echo "ws://127.0.0.1:$port" ;;
	esac
}

# listener_pid prints the process id of what listens on the port of URL
# $1 (the Redis or NATS server), or nothing when it cannot be seen.
listener_pid() {
	local port=${1#*://}
	port=${port%%/*}
	port=${port##*:}
	ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2 || true
}

# bench_args prints the load tool's arguments for case $1 on server $2 in
# run $3, try $4.
bench_args() {
	local proto nodes=""
	case $2 in
	herald | herald-nats) proto=jsonl; [[ $1 == idle-* ]] && proto=json ;;
	*) proto=$2 ;;
	esac
	if [[ $MODE == cluster ]]; then
		nodes="-sub-urls $(url "$2" 2) -node-pids ${NODE_PIDS[1]} -channel bench-$RUNID-$1-$3-$4"
		local broker
		broker=$(listener_pid "$([[ $2 == herald-nats ]] && echo "$NATS_URL" || echo "$REDIS_URL")")
		[[ -z $broker ]] || nodes+=" -broker-pids $broker"
	fi
	case $1 in
	idle-*) echo "idle -proto $proto -url $(url "$2" 1) -n ${1#idle-}" ;;
	closed) echo "fanout -proto $proto -url $(url "$2" 1) $nodes -subs $SUBS -window $WINDOW -duration $DURATION$READ_FLAG" ;;
	rate) echo "fanout -proto $proto -url $(url "$2" 1) $nodes -subs $SUBS -rate $RATE -duration $DURATION$READ_FLAG" ;;
	esac
}

run() { # case, server, run number
	local case=$1 server=$2 i=$3 try line out
	for try in $(seq 0 "$RETRIES"); do
		wait_quiet
		start_node "$server" 1
		[[ $MODE == cluster ]] && start_node "$server" 2
		out="$OUT/$case.$server.$i.txt"
		echo "== $case on $server, run $i/$RUNS, try $((try + 1)) (pids ${NODE_PIDS[*]})" >&2
		# shellcheck disable=SC2046 # the arguments are words
		"${TOOL_PIN[@]}" "$BIN" bench $(bench_args "$case" "$server" "$i" "$try") -pid "${NODE_PIDS[0]}" | tee "$out" >&2 ||
			echo "== the load tool failed (see above); its last line is kept as it is" >&2
		stop_nodes
		line=$(tail -n 1 "$out")
		if [[ $line != "{"* ]]; then
			echo "== no result from $case on $server, run $i" >&2
			continue
		fi
		if ((try < RETRIES)) && disturbed "$line"; then
			echo "== other processes used more than $MAX_OTHER_CORES cores: repeating" >&2
			echo "$line" >> "$OUT/$case.$server.disturbed.jsonl"
			continue
		fi
		echo "$line" >> "$OUT/$case.$server.jsonl"
		break
	done
}

CASES=()
for scenario in $SCENARIOS; do
	if [[ $scenario == idle ]]; then
		for n in $N; do CASES+=("idle-$n"); done
	else
		CASES+=("$scenario")
	fi
done
for case in "${CASES[@]}"; do
	for server in $SERVERS; do
		: > "$OUT/$case.$server.jsonl"
		: > "$OUT/$case.$server.disturbed.jsonl"
	done
done
start=$SECONDS
for i in $(seq "$RUNS"); do
	for case in "${CASES[@]}"; do
		for server in $SERVERS; do
			run "$case" "$server" "$i"
		done
	done
done

# The summary: herald's servers against the peers.
HERALDS=() PEERS=()
for server in $SERVERS; do
	case $server in
	herald*) HERALDS+=("$server") ;;
	*) PEERS+=("$server") ;;
	esac
done
setup="one node"
[[ $MODE == cluster ]] && setup="two nodes, publisher on node 1, subscribers on node 2"
[[ $PIN == 1 ]] && setup+=", servers on CPU 0 and the load tool on CPU 1"
[[ $STEER == 1 ]] && setup+=", loopback receive steered to CPU 1"
[[ $SPIN == 1 ]] && setup+=", the load tool's readers spinning"
[[ $EPOLL == 1 ]] && setup+=", the load tool reading from epoll sets"
[[ $STAMPS == 1 ]] && setup+=", messages timed by the kernel's receive time"
echo
echo "$setup;"
echo "medians of $RUNS runs, [min–max], and herald/peer; $((SECONDS - start))s (raw results in $OUT):"
for case in "${CASES[@]}"; do
	case $case in
	idle-*)
		echo "idle: ${case#idle-} subscribed connections"
		fields="mem_per_conn_kib connect_rate subscribed errors dropped server_cores other_cores"
		;;
	closed)
		echo "closed: $SUBS subscribers, window $WINDOW, $DURATION"
		fields="delivered_per_sec server_cpu_us_per_delivery p50_ms p99_ms lost errors server_cores client_cores other_cores"
		;;
	rate)
		echo "rate: $SUBS subscribers at $RATE/s, $DURATION"
		fields="delivered_per_sec server_cpu_us_per_delivery p50_ms p99_ms max_ms lost errors server_cores other_cores"
		;;
	esac
	[[ $MODE == cluster ]] && fields+=" broker_cores"
	printf '  %-27s' ""
	for server in $SERVERS; do printf ' %-36s' "$server"; done
	for h in "${HERALDS[@]}"; do for p in "${PEERS[@]}"; do printf ' %-18s' "$h/$p"; done; done
	echo
	for f in $fields; do
		printf '  %-27s' "$f"
		for server in $SERVERS; do
			printf ' %-36s' "$(median "$OUT/$case.$server.jsonl" "$f") [$(span "$OUT/$case.$server.jsonl" "$f")]"
		done
		for h in "${HERALDS[@]}"; do
			for p in "${PEERS[@]}"; do
				printf ' %-18s' "$(awk -v h="$(median "$OUT/$case.$h.jsonl" "$f")" -v p="$(median "$OUT/$case.$p.jsonl" "$f")" \
					'BEGIN {if (p + 0 == 0 || h == "n/a") print "-"; else printf "%.2f", h / p}')"
			done
		done
		echo
	done
	for server in $SERVERS; do
		d=$(wc -l < "$OUT/$case.$server.disturbed.jsonl")
		((d == 0)) || echo "  ($server: $d disturbed runs set aside)"
	done
done

# Growth of idle memory with the number of connections: linear growth
# keeps memory per connection flat.
idles=()
for case in "${CASES[@]}"; do [[ $case == idle-* ]] && idles+=("$case"); done
if ((${#idles[@]} > 1)); then
	echo "idle growth (medians): connections, RSS growth, memory per connection, the growth per"
	echo "connection added since the count before (flat when growth is linear), connect rate"
	for server in $SERVERS; do
		echo "  $server:"
		prev_n="" prev_growth=""
		for case in "${idles[@]}"; do
			growth=$(awk 'match($0, /"rss_before_kib":[0-9]+/) {b = substr($0, RSTART + 17, RLENGTH - 17)}
				match($0, /"rss_after_kib":[0-9]+/) {print (substr($0, RSTART + 16, RLENGTH - 16) - b) / 1024}' \
				"$OUT/$case.$server.jsonl" | sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "n/a"; else printf "%.1f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
			marginal=$(awk -v n="${case#idle-}" -v g="$growth" -v pn="$prev_n" -v pg="$prev_growth" \
				'BEGIN {if (pn == "" || g == "n/a" || pg == "n/a" || n == pn) print "-"; else printf "%.2f", (g - pg) * 1024 / (n - pn)}')
			printf '    %7s  %8s MiB  %8s KiB/conn  %8s KiB/added conn  %10s conns/s\n' "${case#idle-}" "$growth" \
				"$(median "$OUT/$case.$server.jsonl" mem_per_conn_kib)" "$marginal" "$(median "$OUT/$case.$server.jsonl" connect_rate)"
			prev_n=${case#idle-} prev_growth=$growth
		done
	done
fi
