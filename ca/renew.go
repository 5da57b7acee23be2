package ca

import (
	"crypto/x509"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// RenewBefore says when an intermediate is due for renewal: when less than Duration
// of its life is left, or, when Duration is zero, less than Fraction of its whole
// lifetime (cert-manager's default is a third).
type RenewBefore struct {
	Duration time.Duration
	Fraction float64
}

// DefaultRenewBefore renews with a third of the lifetime left.
func DefaultRenewBefore() RenewBefore { return RenewBefore{Fraction: 1.0 / 3} }

// ParseRenewBefore reads "720h", "30d" or a percentage of the lifetime such as "33%".
func ParseRenewBefore(s string) (RenewBefore, error) {
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(pct, 64)
		if err != nil || f <= 0 || f >= 100 {
			return RenewBefore{}, fmt.Errorf("renew-before %q: a percentage must be between 0 and 100", s)
		}
		return RenewBefore{Fraction: f / 100}, nil
	}
	d, err := ParseDuration(s)
	if err != nil {
		return RenewBefore{}, fmt.Errorf("renew-before: %w", err)
	}
	return RenewBefore{Duration: d}, nil
}

func (r RenewBefore) String() string {
	if r.Duration > 0 {
		return FormatDuration(r.Duration)
	}
	return strconv.FormatFloat(r.Fraction*100, 'g', 4, 64) + "% of lifetime"
}

// Due reports whether cert should be renewed at now, and how much life it has left.
func (r RenewBefore) Due(cert *x509.Certificate, now time.Time) (bool, time.Duration) {
	left := cert.NotAfter.Sub(now)
	threshold := r.Duration
	if threshold == 0 {
		threshold = time.Duration(float64(cert.NotAfter.Sub(cert.NotBefore)) * r.Fraction)
	}
	return left < threshold, left
}

// ParseDuration reads a Go duration, with a leading number of days allowed:
// "8760h", "365d", "90d12h".
func ParseDuration(s string) (time.Duration, error) {
	var days time.Duration
	rest := s
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad duration %q (e.g. 8760h, 365d, 90d12h)", s)
		}
		days, rest = time.Duration(n)*24*time.Hour, s[i+1:]
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil {
			return 0, fmt.Errorf("bad duration %q (e.g. 8760h, 365d, 90d12h)", s)
		}
	}
	if days+d <= 0 {
		return 0, fmt.Errorf("duration %q must be positive", s)
	}
	return days + d, nil
}
