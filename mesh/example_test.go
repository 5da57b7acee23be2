package mesh_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
	"github.com/meshpki/meshpki/mesh"
)

// exampleMesh is the clusters of $KUBECONFIG named names, and a root kept in a
// folder of its own (its CRL, root-crl.pem, beside it) as the mesh's Source.
func exampleMesh(names ...string) ([]*k8s.Cluster, *ca.Root, *mesh.Source) {
	clusters, err := k8s.LoadClusters(k8s.ClusterOptions{Paths: filepath.SplitList(os.Getenv("KUBECONFIG")), Contexts: names})
	if err != nil {
		log.Fatal(err)
	}
	root, _, err := ca.CreateRoot(ca.DefaultRootProfile("Example Corp"), time.Now())
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "example-root-")
	if err != nil {
		log.Fatal(err)
	}
	src := &mesh.Source{Issuer: ca.NewLocalIssuer(root), CRLAuthority: func(context.Context) (ca.CRLAuthority, error) {
		return &ca.FolderCRL{Dir: dir, Root: root}, nil
	}}
	return clusters, root, src
}

// What the rotation CronJob does, with CRLs on in the mesh: the first run gives
// every cluster an intermediate (none had one), CRLSync switches CRLs on, and a
// forced run renews every intermediate, their CRLs spread to every cluster first.
func ExampleRotate() {
	ctx := context.Background()
	clusters, _, src := exampleMesh("east", "west")
	opts := mesh.RotateOptions{Rotate: k8s.RotateOptions{
		Namespace: "example-rotate-crls", // istio-system when empty
		Profile:   ca.IntermediateProfile("", "Example Corp"),
		Lock:      k8s.LeaseOptions{Holder: "example-host_1"},
	}}
	rep := mesh.Rotate(ctx, clusters, src, opts)
	fmt.Println("first run:", rep.Verdict(), rep.Summary)

	crls := mesh.CRLSync(ctx, clusters, src, mesh.CRLRunOptions{Namespace: opts.Rotate.Namespace})
	fmt.Println("CRLs on:", crls.Verdict(), len(crls.Clusters), "clusters")

	opts.Rotate.Force = true
	rep = mesh.Rotate(ctx, clusters, src, opts)
	fmt.Println("forced run:", rep.Verdict(), rep.Summary, "CRLs spread ahead to", len(rep.CRLsAhead), "clusters")
	// Output:
	// first run: ok map[rotated:2]
	// CRLs on: ok 2 clusters
	// forced run: ok map[rotated:2] CRLs spread ahead to 2 clusters
}

// A root rotation's first step: every cluster trusts the old and the new root.
// The next run is refused until every istiod has loaded it and the minimum step
// interval has passed (here none: no istiod runs in the example's clusters).
func ExampleRotateRoot() {
	ctx := context.Background()
	clusters, _, src := exampleMesh("east", "west")
	ns := "example-root-rotation"
	inst := mesh.Install(ctx, clusters, mintAll(clusters, src.Issuer), mesh.InstallOptions{Install: k8s.InstallOptions{Namespace: ns}})
	fmt.Println("install:", inst.Verdict())

	next, _, _ := ca.CreateRoot(ca.DefaultRootProfile("Example Corp 2027"), time.Now())
	rep, err := mesh.RotateRoot(ctx, clusters, mesh.RootRotationOptions{Namespace: ns, NewRoot: next.Cert,
		Issuer: ca.NewLocalIssuer(next), MinStepInterval: 24 * time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range rep.Clusters {
		fmt.Println(c.Cluster, c.Action, "to step", c.To)
	}
	rep, _ = mesh.RotateRoot(ctx, clusters, mesh.RootRotationOptions{Namespace: ns, NewRoot: next.Cert,
		Issuer: ca.NewLocalIssuer(next), MinStepInterval: 24 * time.Hour})
	fmt.Println("next run:", rep.Verdict())
	// Output:
	// install: ok
	// east trust both to step 1 (trust-both)
	// west trust both to step 1 (trust-both)
	// next run: waiting
}

// Revoke a cluster's CA across the mesh: the root's CRL records it, and every
// other cluster gets the mesh CRL set (the revoked cluster is left as it is).
func ExampleRevoke() {
	ctx := context.Background()
	clusters, _, src := exampleMesh("east", "west", "north")
	ns := "example-revoke"
	mesh.Install(ctx, clusters, mintAll(clusters, src.Issuer), mesh.InstallOptions{Install: k8s.InstallOptions{Namespace: ns}})
	rep := mesh.Revoke(ctx, clusters, src, mesh.RevokeOptions{CRLRunOptions: mesh.CRLRunOptions{Namespace: ns},
		Clusters: []string{"east"}, Reason: ca.ReasonKeyCompromise, ReasonName: "keyCompromise"})
	fmt.Println("revoked:", rep.Revoked[0].Cluster, rep.Revoked[0].Reason, rep.Verdict())
	for _, c := range rep.Clusters {
		fmt.Println(c.Cluster, c.Action, "revoked:", c.Revoked)
	}
	// Output:
	// revoked: east keyCompromise ok
	// east skipped revoked: true
	// west updated revoked: false
	// north updated revoked: false
}

// mintAll mints a bundle for each cluster.
func mintAll(clusters []*k8s.Cluster, iss ca.Issuer) []map[string][]byte {
	var out []map[string][]byte
	for _, cl := range clusters {
		b, err := ca.Mint(context.Background(), iss, ca.IntermediateProfile(cl.Name, "Example Corp"))
		if err != nil {
			log.Fatal(err)
		}
		files, err := b.Files(ca.FormatIstio)
		if err != nil {
			log.Fatal(err)
		}
		out = append(out, files)
	}
	return out
}
