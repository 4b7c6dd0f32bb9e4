package loadtest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc CPU times (100 on Linux).
const clockTicks = 100

// cpuSample is a reading of the machine's and some processes' CPU time,
// from /proc; fields are zero where /proc cannot be read.
type cpuSample struct {
	at          time.Time
	busy, total uint64 // machine: non-idle and all ticks, over every core
	self, other uint64 // ticks of this process and of the server (pid and more)
	broker      uint64 // ticks of the broker's servers (Redis, NATS)
	ok          bool
}

// sampleCPU reads the machine's CPU time, this process's, as the server's
// the sum of pid's and nodes' (further nodes), and as the broker's the sum
// of brokers'.
func sampleCPU(pid int, nodes, brokers []int) cpuSample {
	s := cpuSample{at: time.Now()}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return s
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		s.total += n
		if i != 3 && i != 4 { // idle, iowait
			s.busy += n
		}
	}
	s.self = procTicks(os.Getpid())
	for _, p := range append([]int{pid}, nodes...) {
		if p > 0 {
			s.other += procTicks(p)
		}
	}
	for _, p := range brokers {
		s.broker += procTicks(p)
	}
	s.ok = true
	return s
}

// procTicks returns the user+system CPU ticks of process pid.
func procTicks(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces: fields count from after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	k, _ := strconv.ParseUint(f[12], 10, 64)
	return u + k
}

// cpuUse is what the machine and the processes did between two samples.
type cpuUse struct {
	HostBusy    float64 `json:"host_cpu_busy"`          // fraction of all cores busy
	ClientCores float64 `json:"client_cores"`           // cores this process used
	ServerCores float64 `json:"server_cores,omitempty"` // cores the server used (given -pid; with -node-pids, all nodes)
	BrokerCores float64 `json:"broker_cores,omitempty"` // cores the broker's servers used (given -broker-pids)
	OtherCores  float64 `json:"other_cores"`            // cores anything else used
}

func cpuBetween(a, b cpuSample) cpuUse {
	if !a.ok || !b.ok || b.total <= a.total {
		return cpuUse{}
	}
	wall := b.at.Sub(a.at).Seconds()
	cores := func(t0, t1 uint64) float64 {
		if t1 < t0 { // a process ended between the samples
			return 0
		}
		return round(float64(t1-t0)/clockTicks/wall, 2)
	}
	u := cpuUse{
		HostBusy:    round(float64(b.busy-a.busy)/float64(b.total-a.total), 3),
		ClientCores: cores(a.self, b.self),
	}
	if b.other > 0 {
		u.ServerCores = cores(a.other, b.other)
	}
	if b.broker > 0 {
		u.BrokerCores = cores(a.broker, b.broker)
	}
	ncpu := float64(b.total-a.total) / clockTicks / wall
	u.OtherCores = round(max(0, u.HostBusy*ncpu-u.ClientCores-u.ServerCores-u.BrokerCores), 2)
	return u
}

// serverCPUPerDelivery is the server's CPU time between samples a and b,
// every node's together, in microseconds per delivery, where deliveries
// is what the subscribers received between the same two samples. It is
// zero when there is no server to measure (no -pid), nothing was
// delivered, or a node ended between the samples (its ticks are gone).
func serverCPUPerDelivery(a, b cpuSample, deliveries int64) float64 {
	if !a.ok || !b.ok || deliveries <= 0 || b.other == 0 || b.other < a.other {
		return 0
	}
	return round(float64(b.other-a.other)/clockTicks*1e6/float64(deliveries), 2)
}

func cpuText(u cpuUse) string {
	s := fmt.Sprintf("machine %.0f%% busy: client %.2f cores", u.HostBusy*100, u.ClientCores)
	if u.ServerCores > 0 {
		s += fmt.Sprintf(", server %.2f cores", u.ServerCores)
	}
	if u.BrokerCores > 0 {
		s += fmt.Sprintf(", broker %.2f cores", u.BrokerCores)
	}
	return s + fmt.Sprintf(", other processes %.2f cores", u.OtherCores)
}

// pidList is a flag.Func that parses comma-separated process ids into dst.
func pidList(dst *[]int) func(string) error {
	return func(v string) error {
		*dst = (*dst)[:0]
		for _, w := range strings.Split(v, ",") {
			if w = strings.TrimSpace(w); w == "" {
				continue
			}
			n, err := strconv.Atoi(w)
			if err != nil || n < 1 {
				return fmt.Errorf("want process ids, got %q", w)
			}
			*dst = append(*dst, n)
		}
		return nil
	}
}
