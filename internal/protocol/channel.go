package protocol

import "strings"

// MaxChannelLen is the longest channel name, in bytes.
const MaxChannelLen = 255

// ValidChannel reports whether name is a channel name of the contract:
// 1–255 bytes of A–Z a–z 0–9 _ - . : @ = ,
func ValidChannel(name string) bool {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !channelByte[name[i]] {
			return false
		}
	}
	return true
}

var channelByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_-.:@=," {
		t[c] = true
	}
	return t
}()

// ReservedNamespace is herald's own namespace: every node publishes its
// numbers there for the admin page. No client, server API call or
// application publish goes there, and no client subscribes.
const ReservedNamespace = "herald-admin"

// Reserved refuses a channel of ReservedNamespace with a forbidden *Error;
// it returns nil for any other channel. Every path that publishes or
// subscribes for someone else than herald asks it.
func Reserved(channel string) *Error {
	if Namespace(channel) != ReservedNamespace {
		return nil
	}
	return Errorf(CodeForbidden, "the "+ReservedNamespace+" namespace is herald's own: the admin page reads it")
}

// Namespace returns the part of a channel name before its first ':', or ""
// when it has none.
func Namespace(channel string) string {
	ns, _, ok := strings.Cut(channel, ":")
	if !ok {
		return ""
	}
	return ns
}
