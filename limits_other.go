//go:build !unix

package herald

// defaultMaxConnections: no limit of herald's own where the open-file
// limit cannot be read.
func defaultMaxConnections() int { return -1 }
