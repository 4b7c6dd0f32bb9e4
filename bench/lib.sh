# bench/lib.sh: helpers shared by bench/run.sh and bench/cluster.sh, which
# source it. Uses QUIET_WAIT and MAX_OTHER_CORES from the caller.

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

