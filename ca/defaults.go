package ca

import "time"

// Defaults of the profiles, for callers (the CLI's flags) to show and use.
const (
	// DefaultOrg is the subject O of roots and intermediates when none is given.
	DefaultOrg = "Istio"
	// DefaultIntermediateCN and DefaultRootCN are the subjects' CN.
	DefaultIntermediateCN = "Intermediate CA"
	DefaultRootCN         = "Root CA"
	// DefaultRootTTL is a new root's lifetime: ten years.
	DefaultRootTTL = 10 * 365 * 24 * time.Hour
)
