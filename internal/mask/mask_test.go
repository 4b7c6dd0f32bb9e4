package mask_test

import (
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/mask"
)

func TestURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"memory":                                       "memory",
		"redis://127.0.0.1:6379/0":                     "redis://127.0.0.1:6379/0",
		"redis://user:hunter2@cache:6379/0":            "redis://user:xxxxx@cache:6379/0",
		"redis://:hunter2@cache:6379/0":                "redis://:xxxxx@cache:6379/0",
		"rediss://u:p%40ss@cache/1?dial_timeout=1s":    "rediss://u:xxxxx@cache/1?dial_timeout=1s",
		"nats://user:hunter2@nats:4222":                "nats://user:xxxxx@nats:4222",
		"nats://hunter2@nats:4222":                     "nats://xxxxx@nats:4222",
		"redis://cache/0?password=hunter2&db=1":        "redis://cache/0?db=1&password=xxxxx",
		"nats://nats:4222?token=hunter2":               "nats://nats:4222?token=xxxxx",
		"nats://nats:4222?Auth_Token=hunter2":          "nats://nats:4222?Auth_Token=xxxxx",
		"redis://user:hunter2%zz@cache:6379/0":         "redis://xxxxx@cache:6379/0",
		"redis://u:hunter2@cache:6379/0?password=a%zz": "redis://u:xxxxx@cache:6379/0?xxxxx",
		"redis://user:hun ter2@ca che/0?x=hunter2":     "redis://xxxxx@ca che/0?xxxxx",
		"user:hunter2@host":                            "user:xxxxx@host",
	} {
		got := mask.URL(in)
		if got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "hunter2") || strings.Contains(got, "p%40ss") {
			t.Errorf("URL(%q) = %q keeps the secret", in, got)
		}
	}
}
