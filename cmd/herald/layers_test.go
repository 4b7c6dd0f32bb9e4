package main

import (
	"io"
	"strings"
	"testing"
)

// A config file named by HERALD_CONFIG that cannot be read is reported
// as the variable's, not as a flag the command line never had.
func TestConfigFromEnvironmentNamesTheVariable(t *testing.T) {
	t.Parallel()
	missing := t.TempDir() + "/missing.yaml"
	_, err := loadSettings(nil, []string{"HERALD_CONFIG=" + missing}, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "HERALD_CONFIG: ") || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("HERALD_CONFIG of a missing file: %v, want an error naming HERALD_CONFIG and the file", err)
	}
	_, err = loadSettings([]string{"--config", missing}, nil, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "--config: ") {
		t.Fatalf("--config of a missing file: %v, want an error naming --config", err)
	}
}

// A config file's mistakes are errors that name the key, and the line
// where the file has it.
func TestConfigFileErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, file string
		want       []string
	}{
		{"another config file", "addr: ':1'\nconfig: other.yaml\n", []string{`"config"`}},
		{"a namespace's bad duration", "addr: ':1'\nnamespaces:\n  chat:\n    join-leave: true\n    history-ttl: 300\n",
			[]string{`"namespaces.chat.history-ttl"`, "line 5"}},
		{"a namespace's bad boolean", "namespaces:\n  news:\n    presence: maybe\n", []string{`"namespaces.news.presence"`, "line 3"}},
		{"a list of lists", "origins:\n  - [https://a.example]\n", []string{`"origins"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := loadSettings([]string{"--config", writeFile(t, tc.file)}, nil, io.Discard)
			if err == nil {
				t.Fatalf("%q loaded", tc.file)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %s", err, w)
				}
			}
		})
	}
}

// herald config masks a secret as ****, which keeps its output a config
// file; a file that still holds the mask is refused rather than run with
// a secret anyone can guess.
func TestMaskedSecretIsRefused(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"api-key", "token-secret", "admin-token"} {
		_, err := loadSettings([]string{"--config", writeFile(t, key+": '****'\n")}, nil, io.Discard)
		if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "mask") {
			t.Errorf("%s: '****' in a config file: %v, want an error naming %s and the mask", key, err, key)
		}
	}
}

// herald config masks a password in the collector's URL as it does the
// broker's.
func TestConfigMasksOTelEndpoint(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	err := run(t.Context(), []string{"config", "--otel-endpoint", "https://user:hunter2@collector.example:4318"}, nil, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "hunter2") || !strings.Contains(out.String(), "otel-endpoint: https://user:xxxxx@collector.example:4318") {
		t.Fatalf("herald config printed the collector's URL unmasked:\n%s", out.String())
	}
}

// A value checked after parsing (a broker URL, a key file, the collector's
// URL) is reported as coming from where it came from: the variable or
// the file's key, not a flag the command line never had.
func TestLateErrorsNameTheirSource(t *testing.T) {
	t.Parallel()
	missing := t.TempDir() + "/missing.pem"
	file := writeFile(t, "broker: mqtt://x\n")
	cases := []struct {
		args, env []string
		want      string
	}{
		{env: []string{"HERALD_BROKER=mqtt://x"}, want: "HERALD_BROKER: "},
		{args: []string{"--broker", "mqtt://x"}, want: "--broker: "},
		{args: []string{"--config", file}, want: file + ": broker: "},
		{env: []string{"HERALD_TOKEN_PUBLIC_KEY=" + missing}, want: "HERALD_TOKEN_PUBLIC_KEY: "},
		{env: []string{"HERALD_TOKEN_JWKS=" + missing}, want: "HERALD_TOKEN_JWKS: "},
	}
	for _, tc := range cases {
		_, err := loadSettings(tc.args, tc.env, io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%v %v: error %v, want one starting %q", tc.args, tc.env, err, tc.want)
		}
	}
	s, err := loadSettings(nil, []string{"HERALD_OTEL_ENDPOINT=udp://collector"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newTracerProvider(t.Context(), s.otelEndpoint, s.otelFrom, nil, nil); err == nil || !strings.HasPrefix(err.Error(), "HERALD_OTEL_ENDPOINT: ") {
		t.Errorf("HERALD_OTEL_ENDPOINT=udp://collector: error %v, want one naming the variable", err)
	}
}
