package protocol

import (
	"strings"
	"testing"
)

func TestValidChannel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		want bool
	}{
		{"a", true},
		{"chat:room-1", true},
		{"A_z.0:@=,-", true},
		{"user@example.com", true},
		{"k=v,k2=v2", true},
		{strings.Repeat("x", 255), true},
		{"", false},
		{strings.Repeat("x", 256), false},
		{"a b", false},
		{"a/b", false},
		{"café", false},
		{"a\x00", false},
		{"a\n", false},
		{"a*", false},
		{"#", false},
		{"a?b", false},
		{"a%20b", false},
		{"\xff", false},
	}
	for _, tt := range tests {
		if got := ValidChannel(tt.name); got != tt.want {
			t.Errorf("ValidChannel(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestNamespace(t *testing.T) {
	t.Parallel()
	tests := []struct{ channel, want string }{
		{"chat:room1", "chat"},
		{"a:b:c", "a"},
		{"plain", ""},
		{":x", ""},
		{"x:", "x"},
	}
	for _, tt := range tests {
		if got := Namespace(tt.channel); got != tt.want {
			t.Errorf("Namespace(%q) = %q, want %q", tt.channel, got, tt.want)
		}
	}
}
