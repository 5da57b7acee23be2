package mesh

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

// BootstrapOptions controls Bootstrap.
type BootstrapOptions struct {
	// Issuer signs the cluster's intermediate.
	Issuer ca.Issuer
	// Profile is the intermediate's profile; its Cluster and L= are the cluster's
	// name.
	Profile ca.Profile
	// Format picks the Secret's keys.
	Format ca.Format
	// Install controls the install. With Install.CreateOnly, a cluster that has
	// cacerts already is refused (ErrSecretExists) before anything is minted. With
	// Install.Lock, the cluster's Lease is held from before that check until the
	// install is done.
	Install k8s.InstallOptions
	// Mesh are the clusters of the mesh the new one joins. When CRLs are on in
	// them (CRLsEnabled), the new CA's CRL is spread to them first (SyncCRLs with
	// the new bundle pending, under CRLs), and the new cacerts carries the mesh CRL
	// set: the others accept what the new CA signs from its first moment (Envoy
	// demands a CRL of every CA in a peer's chain). If the spread fails in any of
	// them, the new cacerts is not installed. Without Mesh, nothing is read or
	// written but cl.
	Mesh []*k8s.Cluster
	// CRLs configures that spread; its AnchorCRLs and Pending are set here.
	CRLs CRLSyncOptions
	// RootCRLs gives the root source's current CRLs (CRLSyncOptions.AnchorCRLs); it
	// is called only when CRLs are on in Mesh.
	RootCRLs func(context.Context) ([]*x509.RevocationList, error)
	// CRLSettle is the wait between the spread and the install, for the mesh's
	// proxies to read the new CRLs (see DefaultCRLSettle); zero waits not.
	CRLSettle time.Duration
}

// Bootstrap mints an intermediate CA for cluster cl and installs it as cacerts. It
// checks what it can before it mints (an Issuer backed by Vault PKI records every
// certificate it signs): the Lease is taken, and with CreateOnly, cacerts must not
// exist. It returns the bundle's files (key included, for the caller to keep) with
// the install's result.
func Bootstrap(ctx context.Context, cl *k8s.Cluster, opts BootstrapOptions) (*k8s.InstallResult, map[string][]byte, error) {
	in := opts.Install
	ns := namespaceOr(in.Namespace)
	res := &k8s.InstallResult{Cluster: cl.Name, Namespace: ns, DryRun: in.DryRun}
	if opts.Issuer == nil {
		return res, nil, fmt.Errorf("cluster %s: bootstrap: no issuer given", cl.Name)
	}
	if in.Lock != nil && !in.DryRun {
		lock := *in.Lock
		if lock.Namespace == "" {
			lock.Namespace = ns
		}
		lease, err := k8s.AcquireLease(ctx, cl, lock)
		if err != nil {
			var le *k8s.LockedError
			if errors.As(err, &le) {
				res.LockedBy = le.Holder
			}
			return res, nil, err
		}
		defer func() {
			for _, w := range []string{lease.TakeoverWarning(), lease.ReleaseWarning(ctx)} {
				if w != "" {
					res.Warnings = append(res.Warnings, w)
				}
			}
		}()
		ctx = lease.Context()
		in.Lock = nil // held here
	}
	if in.CreateOnly {
		_, err := k8s.GetCACerts(ctx, cl, ns)
		switch {
		case err == nil:
			return res, nil, fmt.Errorf("cluster %s: %w in namespace %s", cl.Name, k8s.ErrSecretExists, ns)
		case !apierrors.IsNotFound(err):
			return res, nil, k8s.LeaseCause(ctx, err)
		}
	}
	p := opts.Profile
	p.Cluster = cl.Name
	p.Subject.Locality = []string{cl.Name}
	b, err := ca.Mint(ctx, opts.Issuer, p)
	if err != nil {
		return res, nil, k8s.LeaseCause(ctx, fmt.Errorf("cluster %s: %w", cl.Name, err))
	}
	if len(opts.Mesh) > 0 {
		if err := spreadNewCRL(ctx, cl, b, opts); err != nil {
			return res, nil, k8s.LeaseCause(ctx, err)
		}
	}
	files, err := b.Files(opts.Format)
	if err != nil {
		return res, nil, fmt.Errorf("cluster %s: %w", cl.Name, err)
	}
	ires, err := k8s.Install(ctx, cl, files, in)
	if ires != nil {
		ires.LockedBy = res.LockedBy
		ires.Warnings = append(res.Warnings, ires.Warnings...)
		res = ires
	}
	return res, files, err
}

// spreadNewCRL gives the mesh the CRL of b's new CA, and b the mesh CRL set, when
// CRLs are on in opts.Mesh (see BootstrapOptions.Mesh).
func spreadNewCRL(ctx context.Context, cl *k8s.Cluster, b *ca.Bundle, opts BootstrapOptions) error {
	sync := opts.CRLs
	if sync.Namespace == "" {
		sync.Namespace = namespaceOr(opts.Install.Namespace)
	}
	sync.DryRun = sync.DryRun || opts.Install.DryRun
	on, err := CRLsEnabled(ctx, opts.Mesh, sync)
	if err != nil {
		return fmt.Errorf("cluster %s: reading the mesh's cacerts for CRLs: %w", cl.Name, err)
	}
	if !on {
		return nil
	}
	if opts.RootCRLs == nil {
		return fmt.Errorf("cluster %s: CRLs are on in the mesh, and the root source keeps no CRL: %w", cl.Name, ErrNoRootCRL)
	}
	if sync.AnchorCRLs, err = opts.RootCRLs(ctx); err != nil {
		return fmt.Errorf("cluster %s: the root's CRL: %w", cl.Name, err)
	}
	sync.Pending = []*ca.Bundle{b}
	res, err := SyncCRLs(ctx, opts.Mesh, sync)
	if err != nil {
		return fmt.Errorf("cluster %s: not installed, as its CA's CRL did not reach every cluster of the mesh: %w", cl.Name, err)
	}
	if err := SettleCRLs(ctx, opts.CRLSettle, res, sync.DryRun); err != nil {
		return fmt.Errorf("cluster %s: not installed: waiting for the mesh's proxies to read the new CRLs: %w", cl.Name, err)
	}
	return nil
}
