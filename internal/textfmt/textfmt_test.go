package textfmt

import (
	"io/fs"
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{25 * time.Hour: "1d1h", 90 * time.Minute: "1h30m", 5 * time.Second: "5s", -48 * time.Hour: "-2d0h"} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%s) = %s, want %s", d, got, want)
		}
	}
}

func TestInterval(t *testing.T) {
	for d, want := range map[time.Duration]string{24 * time.Hour: "24h", 90 * time.Minute: "1h30m", 90 * time.Second: "1m30s", 30 * time.Second: "30s"} {
		if got := Interval(d); got != want {
			t.Errorf("Interval(%s) = %s, want %s", d, got, want)
		}
	}
}

func TestFingerprintAndFileMode(t *testing.T) {
	if got := Fingerprint("0123456789abcdef0123"); got != "sha256:0123456789abcdef" {
		t.Errorf("Fingerprint = %s", got)
	}
	if got := FileMode(fs.ModeNamedPipe); got != "a FIFO (named pipe)" {
		t.Errorf("FileMode = %s", got)
	}
}
