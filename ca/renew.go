package ca

import (
	"crypto/x509"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/meshpki/meshpki/internal/textfmt"
)

// RenewBefore says when an intermediate is due for renewal: when less than Duration
// of its life is left, or, when Duration is zero, less than Fraction of its whole
// lifetime (cert-manager's default is a third). The zero value means
// DefaultRenewBefore. RenewAt, Due and Validate are the one place that says when a
// certificate is due.
type RenewBefore struct {
	Duration time.Duration
	Fraction float64
}

// orDefault is r, or DefaultRenewBefore for the zero value.
func (r RenewBefore) orDefault() RenewBefore {
	if r == (RenewBefore{}) {
		return DefaultRenewBefore()
	}
	return r
}

// DefaultRenewBefore renews with a third of the lifetime left.
func DefaultRenewBefore() RenewBefore { return RenewBefore{Fraction: 1.0 / 3} }

// ParseRenewBefore reads "720h", "30d" or a percentage of the lifetime such as "33%".
func ParseRenewBefore(s string) (RenewBefore, error) {
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(pct, 64)
		if err != nil || !(f > 0 && f < 100) { // NaN fails both comparisons
			return RenewBefore{}, fmt.Errorf("%q: a percentage must be between 0 and 100", s)
		}
		return RenewBefore{Fraction: f / 100}, nil
	}
	d, err := ParseDuration(s)
	if err != nil {
		return RenewBefore{}, err
	}
	return RenewBefore{Duration: d}, nil
}

func (r RenewBefore) String() string {
	r = r.orDefault()
	if r.Duration > 0 {
		return textfmt.Duration(r.Duration)
	}
	return strconv.FormatFloat(r.Fraction*100, 'g', 4, 64) + "% of lifetime"
}

// Describe prints r as a user would write it: "30d", "12h0m", "33.33% of lifetime".
func (r RenewBefore) Describe() string {
	if d := r.orDefault().Duration; d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return r.String()
}

// Validate checks that r can be a renewal rule for intermediates that live ttl
// (zero: unknown): a fraction in [0, 1), and a duration that is shorter than ttl,
// or every renewal would be due again at once.
func (r RenewBefore) Validate(ttl time.Duration) error {
	r = r.orDefault()
	if r.Duration < 0 || r.Fraction < 0 || r.Fraction >= 1 {
		return fmt.Errorf("renew-before %s is out of range", r)
	}
	if r.Duration > 0 && ttl > 0 && r.Duration >= ttl {
		return fmt.Errorf("renew-before %s is not shorter than the new intermediates' lifetime %s: every run would rotate again",
			textfmt.Duration(r.Duration), textfmt.Duration(ttl))
	}
	return nil
}

// threshold is how much life left makes cert due.
func (r RenewBefore) threshold(cert *x509.Certificate) time.Duration {
	r = r.orDefault()
	if r.Duration > 0 {
		return r.Duration
	}
	return time.Duration(float64(cert.NotAfter.Sub(cert.NotBefore)) * r.Fraction)
}

// RenewAt is when cert becomes due under r: its not-after minus the renew-before
// threshold.
func (r RenewBefore) RenewAt(cert *x509.Certificate) time.Time {
	return cert.NotAfter.Add(-r.threshold(cert))
}

// Due reports whether cert should be renewed at now (now is past RenewAt), and how
// much life it has left.
func (r RenewBefore) Due(cert *x509.Certificate, now time.Time) (bool, time.Duration) {
	return now.After(r.RenewAt(cert)), cert.NotAfter.Sub(now)
}

// maxDays is the most days a time.Duration holds (about 292 years).
const maxDays = int64(math.MaxInt64 / int64(24*time.Hour))

// goDurationSyntax is what time.ParseDuration accepts without a sign: a failure on
// input of this shape is an overflow, not a typo.
var goDurationSyntax = regexp.MustCompile(`^(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)

// ParseDuration reads a positive Go duration, with a leading number of days allowed:
// "8760h", "365d", "90d12h". No sign is allowed, and a duration that does not fit
// in a time.Duration (over 106751 days) is refused as too long, never wrapped.
func ParseDuration(s string) (time.Duration, error) { return parseDuration(s, false) }

// ParseDurationOrZero is ParseDuration that also takes a zero duration in any unit
// ("0", "0s", "0m", "0d", "0h0m"), for settings where zero turns something off.
func ParseDurationOrZero(s string) (time.Duration, error) { return parseDuration(s, true) }

func parseDuration(s string, allowZero bool) (time.Duration, error) {
	if allowZero && s == "0" {
		return 0, nil
	}
	bad := fmt.Errorf("bad duration %q (e.g. 8760h, 365d, 90d12h)", s)
	tooLong := fmt.Errorf("duration %q is too long: at most %dd (about 292 years)", s, maxDays)
	if allowZero && s == "" {
		return 0, bad
	}
	var days time.Duration
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		digits := s[:i]
		if digits == "" || strings.Trim(digits, "0123456789") != "" {
			return 0, bad
		}
		n, err := strconv.ParseInt(digits, 10, 64)
		if err != nil || n > maxDays {
			return 0, tooLong
		}
		days, rest = time.Duration(n)*24*time.Hour, s[i+1:]
	}
	var d time.Duration
	if rest != "" {
		if !goDurationSyntax.MatchString(rest) {
			return 0, bad
		}
		var err error
		if d, err = time.ParseDuration(rest); err != nil {
			return 0, tooLong // the syntax is good, so the number overflowed
		}
	}
	if d > math.MaxInt64-days {
		return 0, tooLong
	}
	if days+d <= 0 && !allowZero {
		return 0, fmt.Errorf("duration %q must be positive", s)
	}
	return days + d, nil
}
