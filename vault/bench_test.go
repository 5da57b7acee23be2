package vault

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
)

// BenchmarkPKIMint mints b.N Vault-signed intermediates (ECDSA P-256 keys made
// locally, signed by the real Vault's <mount>/root/sign-intermediate over HTTP, each
// answer checked and the bundle verified) with ca.MintEach, as `intermediate create
// --vault-pki` does, at several concurrency levels. The intermediates/s metric is the
// figure to compare with the 200/s goal.
//
//	VAULTDEV_BIN=$(tools/build.sh vaultdev)/vaultdev go test -run '^$' -bench PKIMint ./vault/
func BenchmarkPKIMint(b *testing.B) {
	v, admin := rootClient(b)
	ctx := context.Background()
	mount, _ := newPKIRoot(b, v, admin, 10*365*24*time.Hour)
	signer := tokenClient(b, v, policyToken(b, v, admin, signOnlyPolicy(mount), false))
	iss, err := NewPKIIssuer(ctx, signer.Logical(), mount, "")
	if err != nil {
		b.Fatal(err)
	}
	for _, workers := range []int{1, 4, 16, 64} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			ps := make([]ca.Profile, b.N)
			for i := range ps {
				ps[i] = ca.IntermediateProfile(fmt.Sprintf("cluster-%d", i), "Istio")
			}
			b.ReportAllocs()
			b.ResetTimer()
			errs := ca.MintEach(ctx, iss, ps, workers, func(_ int, _ *ca.Bundle, err error) error { return err })
			b.StopTimer()
			for _, err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "intermediates/s")
		})
	}
}

// BenchmarkPKIIssueParallel measures the Vault round trip alone (one CSR, signed over
// and over) from GOMAXPROCS goroutines.
func BenchmarkPKIIssueParallel(b *testing.B) {
	v, admin := rootClient(b)
	ctx := context.Background()
	mount, _ := newPKIRoot(b, v, admin, 10*365*24*time.Hour)
	iss, err := NewPKIIssuer(ctx, admin.Logical(), mount, "")
	if err != nil {
		b.Fatal(err)
	}
	p := ca.IntermediateProfile("east", "Istio")
	bundle, err := ca.Mint(ctx, iss, p)
	if err != nil {
		b.Fatal(err)
	}
	csr := csrFor(b, bundle, p)
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := iss.Issue(ctx, csr, p); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signatures/s")
}
