package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
)

// durationText writes a default duration as a user would type it: whole days as
// "365d", anything else as Go does ("36h").
func durationText(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// ttlFlag is --ttl with the library's default def.
func ttlFlag(category string, def time.Duration, usage string) cli.Flag {
	return &cli.StringFlag{Name: "ttl", Category: category, Value: durationText(def), Usage: usage + " (Go duration, or days: 365d)"}
}

// orgFlag is --org, subject O, with the library's default.
func orgFlag(category, usage string) cli.Flag {
	return &cli.StringFlag{Name: "org", Category: category, Value: ca.DefaultOrg, Usage: usage}
}

// trustDomainFlag is --trust-domain: the mesh's trust domain, whose workload SPIFFE
// IDs the URI name constraints of every CA must allow.
func trustDomainFlag(category string) cli.Flag {
	return &cli.StringFlag{Name: "trust-domain", Category: category, Value: ca.DefaultTrustDomain,
		Usage: "the mesh's trust domain (meshConfig.trustDomain): a CA whose URI name constraints exclude its workloads' SPIFFE IDs is refused"}
}

// checkTrustDomain checks --trust-domain as SPIFFE names one: lower-case letters,
// digits, '.', '-' and '_'.
func checkTrustDomain(td string) error {
	if td == "" {
		return inputError(errors.New("--trust-domain must not be empty"))
	}
	for _, r := range td {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return inputError(fmt.Errorf("--trust-domain %q: a trust domain holds only lower-case letters, digits, '.', '-' and '_'", td))
		}
	}
	return nil
}

// minRemainingFlag is --min-remaining with the library's default.
func minRemainingFlag(usage string) cli.Flag {
	return &cli.StringFlag{Name: "min-remaining", Value: durationText(ca.DefaultMinRemaining), Usage: usage + " (Go duration, or days: 30d)"}
}
