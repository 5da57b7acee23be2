package mesh

import (
	"context"
	"fmt"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

// MintAhead decides, as a dry run of Rotate does (no Lease, nothing written), which
// of clusters are due, and mints their new intermediates now, so that their CRLs
// can reach every cluster before any of them is installed: pass them to SyncCRLs
// as Pending, then to Rotate as RotateOptions.Minted. Clusters that are not due,
// or that Rotate would refuse, get none. A failure to mint is returned, with
// nothing minted for the rest.
func MintAhead(ctx context.Context, clusters []*k8s.Cluster, opts k8s.RotateOptions) (map[string]*ca.Bundle, error) {
	dry := opts
	dry.DryRun = true
	minted := map[string]*ca.Bundle{}
	for _, r := range k8s.Each(ctx, clusters, k8s.DefaultConcurrency, func(ctx context.Context, cl *k8s.Cluster) (*k8s.RotateResult, error) {
		return k8s.Rotate(ctx, cl, dry)
	}, nil) {
		if r.Err != nil || r.Value == nil || r.Value.Outcome != k8s.OutcomeDue {
			continue
		}
		p := opts.Profile
		p.Cluster = r.Cluster.Name
		p.Subject.Locality = []string{r.Cluster.Name}
		b, err := ca.Mint(ctx, opts.Issuer, p)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", r.Cluster.Name, err)
		}
		minted[r.Cluster.Name] = b
	}
	return minted, nil
}
