// Package mask hides credentials in the broker URLs herald prints: in
// logs, in errors and in herald config. It is the one place that knows
// where a URL keeps them.
package mask

import (
	"net/url"
	"strings"
)

// hidden replaces what is masked.
const hidden = "xxxxx"

// URL returns s with its credentials replaced by "xxxxx": the password
// of its user information (redis://user:PASSWORD@host), user information
// without a password, which NATS reads as a token (nats://TOKEN@host), and
// the values of query parameters whose names speak of a password, a
// token or a secret (?password=…). A string that does not parse as a URL
// keeps only its scheme and what follows its last '@', up to any '?'.
func URL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return unparsed(s)
	}
	if i := strings.LastIndexByte(u.Opaque, '@'); i >= 0 { // "user:pass@host" reads as scheme "user"
		u.Opaque = hidden + u.Opaque[i:]
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), hidden)
		} else {
			u.User = url.User(hidden)
		}
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = hidden
		} else {
			for k := range q {
				if secretName(k) {
					q[k] = []string{hidden}
				}
			}
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

// secretName reports whether a query parameter's name says it holds a
// credential.
func secretName(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"pass", "pwd", "token", "secret", "key", "auth", "cred"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// unparsed masks a string that is not a URL.
func unparsed(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		scheme, rest = "", s
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest = rest[:i] + "?" + hidden
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = hidden + rest[i:]
	}
	if scheme == "" {
		return rest
	}
	return scheme + "://" + rest
}
