package broker

import (
	"strings"
	"testing"
)

func TestParseOffset(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Offset
		wantErr bool
	}{
		{in: "", want: Offset{}},
		{in: "1-abcd", want: Offset{Epoch: "abcd", Seq: 1}},
		{in: "18446744073709551615-e", want: Offset{Epoch: "e", Seq: 18446744073709551615}},
		{in: "0-e", want: Offset{Epoch: "e"}},
		{in: "5-a-b", want: Offset{Epoch: "a-b", Seq: 5}},
		{in: "7-" + strings.Repeat("e", 64), want: Offset{Epoch: strings.Repeat("e", 64), Seq: 7}},
		{in: "7-" + strings.Repeat("e", 65), wantErr: true},
		{in: "5", wantErr: true},
		{in: "5-", wantErr: true},
		{in: "-e", wantErr: true},
		{in: "x-e", wantErr: true},
		{in: "-1-e", wantErr: true},
		{in: "18446744073709551616-e", wantErr: true},
		{in: "1.5-e", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseOffset(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseOffset(%q) = %#v, %v; want %#v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	if s := (Offset{}).String(); s != "" {
		t.Errorf("zero Offset String() = %q, want empty", s)
	}
	if s := (Offset{Epoch: "ab", Seq: 3}).String(); s != "3-ab" {
		t.Errorf("String() = %q, want 3-ab", s)
	}
}

func FuzzParseOffset(f *testing.F) {
	for _, s := range []string{"", "1-abcd", "12-9f3a01bc", "0-x", "5-a-b", "-x", "5-", "x-1", "+1-e", "01-e", "1.5-e",
		"18446744073709551615-ffffffff", "18446744073709551616-e", "5-deadbeef", "7-" + strings.Repeat("e", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseOffset(s)
		if err != nil {
			if !o.IsZero() {
				t.Fatalf("ParseOffset(%q) failed but returned %#v", s, o)
			}
			return
		}
		w := o.String()
		if (w == "") != o.IsZero() {
			t.Fatalf("ParseOffset(%q) = %#v, whose String is %q", s, o, w)
		}
		back, err := ParseOffset(w)
		if err != nil || back != o {
			t.Fatalf("ParseOffset(%q) = %#v; its String %q parses to %#v, %v", s, o, w, back, err)
		}
		if back.String() != w {
			t.Fatalf("String is not canonical: %q then %q", w, back.String())
		}
	})
}
