//go:build unix

package herald

import "syscall"

// defaultMaxConnections is the process's open-file limit less a reserve for
// listeners, broker connections and files: a tenth of the limit, at most
// 256. Go raises the soft limit to the hard one at start, so this is what
// the process can really open.
func defaultMaxConnections() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == 0 || lim.Cur > 1<<30 {
		return -1 // unknown or unlimited: no limit of herald's own
	}
	n := int(lim.Cur)
	return n - min(n/10, 256)
}
