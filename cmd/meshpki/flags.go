package main

import (
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

// minRemainingFlag is --min-remaining with the library's default.
func minRemainingFlag(usage string) cli.Flag {
	return &cli.StringFlag{Name: "min-remaining", Value: durationText(ca.DefaultMinRemaining), Usage: usage + " (Go duration, or days: 30d)"}
}
