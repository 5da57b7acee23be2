package kms_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/kms"
)

// BenchmarkMint100 mints 100 cluster bundles (ECDSA P-256 cluster keys, 8 at once as
// intermediate create does) from a root whose key is in a file and from the same
// kind of root whose key is in a SoftHSM2 token, side by side in one run, for an
// ECDSA P-256 and an RSA-3072 root. Each bundle is one signature by the root; the
// cluster keys are made in the process in both cases. Run: make bench-hsm.
func BenchmarkMint100(b *testing.B) {
	h := testenv.NewSoftHSM(b)
	now := time.Now()
	profiles := make([]ca.Profile, 100)
	for i := range profiles {
		profiles[i] = ca.IntermediateProfile(fmt.Sprintf("c%d", i), "")
	}
	for i, kt := range []ca.KeyType{ca.ECDSAP256, ca.RSA3072} {
		p := ca.DefaultRootProfile("")
		p.KeyType = kt
		file, _, err := ca.CreateRoot(p, now)
		if err != nil {
			b.Fatal(err)
		}
		key, err := kms.Create(context.Background(), h.URI(fmt.Sprintf("4%d", i), "bench-"+string(kt)), kt, kms.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer key.Close()
		token, err := ca.CreateRootWithSigner(p, key, now)
		if err != nil {
			b.Fatal(err)
		}
		for _, root := range []struct {
			name string
			r    *ca.Root
		}{{"file", file}, {"softhsm2", token}} {
			b.Run(fmt.Sprintf("root=%s/key=%s", kt, root.name), func(b *testing.B) {
				iss := ca.NewLocalIssuer(root.r)
				for b.Loop() {
					start := time.Now()
					for _, err := range ca.MintEach(context.Background(), iss, profiles, 8, func(int, *ca.Bundle, error) error { return nil }) {
						if err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/100bundles")
				}
			})
		}
	}
}
