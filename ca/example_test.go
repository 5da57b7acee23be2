package ca_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/meshpki/meshpki/ca"
)

// Mint a cluster's intermediate CA from a root held in memory, and check its
// bundle as istiod will.
func ExampleMint() {
	ctx := context.Background()
	root, _, err := ca.CreateRoot(ca.DefaultRootProfile("Example Corp"), time.Now())
	if err != nil {
		log.Fatal(err)
	}
	b, err := ca.Mint(ctx, ca.NewLocalIssuer(root), ca.IntermediateProfile("east", "Example Corp"))
	if err != nil {
		log.Fatal(err)
	}
	files, err := b.Files(ca.FormatIstio) // ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem
	if err != nil {
		log.Fatal(err)
	}
	rep := ca.Verify(files, ca.VerifyOptions{})
	fmt.Println(b.Cert.Subject, "CA:", b.Cert.IsCA, "pathlen 0:", b.Cert.MaxPathLenZero)
	fmt.Println("verifies as istiod would:", rep.OK(), "files:", len(files))
	// Output:
	// CN=Intermediate CA,O=Example Corp,L=east CA: true pathlen 0: true
	// verifies as istiod would: true files: 4
}

// Check bundles as one mesh: each verifies, and all trust the same roots, or the
// clusters' workloads cannot complete mutual TLS across clusters.
func ExampleSameRoots() {
	ctx := context.Background()
	mint := func(root *ca.Root, cluster string) *ca.Report {
		b, err := ca.Mint(ctx, ca.NewLocalIssuer(root), ca.IntermediateProfile(cluster, "Example Corp"))
		if err != nil {
			log.Fatal(err)
		}
		files, err := b.Files(ca.FormatIstio)
		if err != nil {
			log.Fatal(err)
		}
		return ca.Verify(files, ca.VerifyOptions{})
	}
	root, _, _ := ca.CreateRoot(ca.DefaultRootProfile("Example Corp"), time.Now())
	other, _, _ := ca.CreateRoot(ca.DefaultRootProfile("Other Corp"), time.Now())
	east, west, north := mint(root, "east"), mint(root, "west"), mint(other, "north")

	fmt.Println("east + west:", ca.SameRoots([]string{"east", "west"}, []*ca.Report{east, west}) == nil)
	p := ca.SameRoots([]string{"east", "west", "north"}, []*ca.Report{east, west, north})
	fmt.Println("east + west + north:", p == nil, p.Check)
	// Output:
	// east + west: true
	// east + west + north: false mesh-roots
}
