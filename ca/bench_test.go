package ca

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkMint measures one intermediate (key + CSR + sign + check + verify) per
// key type, with an ECDSA P-256 root. Run: make bench-go.
func BenchmarkMint(b *testing.B) {
	root := newRoot(b, DefaultRootProfile(""))
	iss := NewLocalIssuer(root)
	for _, kt := range []KeyType{ECDSAP256, ECDSAP384, RSA2048, RSA4096} {
		b.Run(string(kt), func(b *testing.B) {
			p := IntermediateProfile("bench", "")
			p.KeyType = kt
			for b.Loop() {
				mint(b, iss, p)
			}
		})
	}
}

// BenchmarkKeygen is the floor for RSA minting: key generation alone.
func BenchmarkKeygen(b *testing.B) {
	for _, kt := range []KeyType{ECDSAP256, RSA4096} {
		b.Run(string(kt), func(b *testing.B) {
			for b.Loop() {
				if _, err := GenerateKey(kt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMintEachAndWrite mints and writes (atomically, fsynced) N ECDSA bundles
// concurrently, as "intermediate create" does; reported per bundle.
func BenchmarkMintEachAndWrite(b *testing.B) {
	root := newRoot(b, DefaultRootProfile(""))
	iss := NewLocalIssuer(root)
	const n = 100
	profiles := make([]Profile, n)
	for i := range profiles {
		profiles[i] = IntermediateProfile(fmt.Sprintf("c%d", i), "")
	}
	for b.Loop() {
		out := b.TempDir()
		start := time.Now()
		errs := MintEach(context.Background(), iss, profiles, 8, func(i int, bu *Bundle, err error) error {
			if err != nil {
				return err
			}
			files, err := bu.Files(FormatIstio)
			if err != nil {
				return err
			}
			_, err = WriteDir(filepath.Join(out, profiles[i].Cluster), files, WriteOptions{NoSyncParent: true})
			return err
		})
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/n, "µs/bundle")
	}
}

// BenchmarkVerifyDuplicateRoots verifies a bundle whose cert-chain.pem repeats the
// root n times (n=1000 and n=8000: the time per run should grow about 8x, not 64x).
func BenchmarkVerifyDuplicateRoots(b *testing.B) {
	root := newRoot(b, DefaultRootProfile("Istio"))
	bundle := mint(b, NewLocalIssuer(root), IntermediateProfile("c", ""))
	files, err := bundle.Files(FormatIstio)
	if err != nil {
		b.Fatal(err)
	}
	rootPEM := EncodeCertificatesPEM(root.Cert)
	for _, n := range []int{1000, 8000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			f := maps.Clone(files)
			f[CertChainFile] = append(EncodeCertificatesPEM(bundle.Cert), bytes.Repeat(rootPEM, n)...)
			for b.Loop() {
				Verify(f, VerifyOptions{})
			}
		})
	}
}
