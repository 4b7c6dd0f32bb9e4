# shellcheck shell=bash
# bench/lib.sh: helpers shared by bench/run.sh, bench/cluster.sh and
# bench/compare.sh, which source it. Uses QUIET_WAIT, MAX_OTHER_CORES and
# OUT from the caller.

# cpu_idle prints the machine's idle percentage over three seconds.
cpu_idle() {
	local a b
	read -r -a a < /proc/stat
	sleep 3
	read -r -a b < /proc/stat
	local total=0 idle
	for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
	idle=$((b[4] - a[4] + b[5] - a[5]))
	echo $((total > 0 ? 100 * idle / total : 100))
}

# wait_quiet waits, up to QUIET_WAIT seconds, until the machine is at least
# 85% idle, so that other work on it does not skew a run.
wait_quiet() {
	local waited=0 idle
	[[ -r /proc/stat && $QUIET_WAIT -gt 0 ]] || return 0
	while idle=$(cpu_idle); ((idle < 85)); do
		waited=$((waited + 3))
		if ((waited >= QUIET_WAIT)); then
			echo "machine still ${idle}% idle after ${QUIET_WAIT}s; running anyway" >&2
			return 0
		fi
	done
}

# disturbed reports whether the JSON line $1 says other processes used more
# than MAX_OTHER_CORES while it ran.
disturbed() {
	[[ -n $MAX_OTHER_CORES ]] || return 1
	local other
	other=$(grep -o '"other_cores":[0-9.]*' <<<"$1" | tail -n 1 | cut -d: -f2)
	awk -v o="${other:-0}" -v m="$MAX_OTHER_CORES" 'BEGIN {exit !(o > m)}'
}


# wait_listen waits until something listens on 127.0.0.1:$1, and exits the
# script when process $2 (named $3 in the message) ends first or nothing
# listens within 20 seconds.
wait_listen() {
	local port=$1 pid=$2 name=$3
	for _ in $(seq 400); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || { echo "$name exited; see $OUT/server.log" >&2; exit 1; }
		sleep 0.05
	done
	echo "$name did not listen on 127.0.0.1:$port" >&2
	exit 1
}

# NODE_PIDS are the server processes (one, or every node of a cluster)
# that a script runs at a time; stop_nodes stops them (SIGTERM) and waits
# for them.
NODE_PIDS=()
stop_nodes() {
	local pid
	for pid in "${NODE_PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${NODE_PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	NODE_PIDS=()
}

# SERVER_PID is the server a script runs one at a time; stop_server stops
# it (SIGTERM) and waits for it.
SERVER_PID=
stop_server() {
	if [[ -n $SERVER_PID ]]; then
		kill -TERM "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
		SERVER_PID=
	fi
}

# values prints a numeric field ($2) of every line of a JSON-lines file
# ($1), sorted; median and span summarise them.
values() { grep -o "\"$2\":[-0-9.e+]*" "$1" | cut -d: -f2 | sort -g; }
median() {
	values "$1" "$2" | awk '{v[NR] = $1} END {if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
span() { values "$1" "$2" | awk 'NR == 1 {lo = $1} {hi = $1} END {if (NR) printf "%s–%s", lo, hi}'; }
