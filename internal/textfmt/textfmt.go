// Package textfmt prints what meshpki tells people: durations, intervals,
// fingerprints and file kinds, one way everywhere.
package textfmt

import (
	"fmt"
	"io/fs"
	"strings"
	"time"
)

// Fingerprint prints a fingerprint as people compare them: sha256:<first 16 hex digits>.
func Fingerprint(fp string) string {
	if len(fp) > 16 {
		fp = fp[:16]
	}
	return "sha256:" + fp
}

// Duration prints a duration in days and hours, e.g. "364d23h" or "5h30m".
func Duration(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d >= 24*time.Hour:
		s = fmt.Sprintf("%dd%dh", d/(24*time.Hour), (d%(24*time.Hour))/time.Hour)
	case d >= time.Hour:
		s = fmt.Sprintf("%dh%dm", d/time.Hour, (d%time.Hour)/time.Minute)
	default:
		s = d.Round(time.Second).String()
	}
	if neg {
		return "-" + s
	}
	return s
}

// Interval prints a duration as a flag takes it, without zero units:
// "24h", "1h30m", "90s".
func Interval(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// FileMode names what a non-regular file is, e.g. "a FIFO (named pipe)".
func FileMode(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a folder"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "a special file (" + m.Type().String() + ")"
}
