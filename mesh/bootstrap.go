package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

// BootstrapOptions controls Bootstrap.
type BootstrapOptions struct {
	// Source signs the cluster's intermediate and, when the mesh uses CRLs, gives
	// the root's CRL.
	Source *Source
	// Profile is the intermediate's profile; its Cluster and L= are the cluster's
	// name.
	Profile ca.Profile
	// Format picks the Secret's keys.
	Format ca.Format
	// Install controls the install. With Install.CreateOnly, a cluster that has
	// cacerts already is refused (k8s.ErrSecretExists) before anything is minted.
	// With Install.Lock, the cluster's Lease is held from before that check until
	// the install is done.
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
	// CRLSettle is the wait between the spread and the install, for the mesh's
	// proxies to read the new CRLs (see DefaultCRLSettle); zero waits not.
	CRLSettle time.Duration
	// Out, when set, is a folder that receives the bundle as Out/<cluster>/ (key
	// 0600, folder 0700) once it is installed; an existing bundle folder there is
	// refused before anything is minted. A dry run writes none.
	Out string
	// Log receives the bundle folder's lock and clean-up notes; nil logs nothing.
	Log *slog.Logger
}

// BootstrapReport is what Bootstrap did. It never holds key material.
type BootstrapReport struct {
	*k8s.InstallResult
	// BundleDir is where the bundle was written (BootstrapOptions.Out), if it was.
	BundleDir string `json:"bundleDir,omitempty"`
	// CRLs is the spread of the new CA's CRL to the mesh, when CRLs are on there.
	CRLs []*CRLSyncResult `json:"crls,omitempty"`
	// Error is Err's message, for JSON.
	Error string `json:"error,omitempty"`
	// Err is why the bootstrap failed; nil when it did not.
	Err error `json:"-"`
}

// Verdict is OK when the cluster has its cacerts (and the bundle its folder).
func (r *BootstrapReport) Verdict() Verdict {
	if r.Err != nil {
		return Failed
	}
	return OK
}

// Bootstrap mints an intermediate CA for the new cluster cl and installs it as
// cacerts, after the checks it can make before minting (an issuer backed by Vault
// PKI records every certificate it signs): the profile against the signing path,
// the bundle folder, the Lease, and with CreateOnly that cacerts does not exist.
// With Mesh, the new CA's CRL reaches the mesh first when it uses CRLs. With Out,
// the bundle is written there once installed. The files returned are the bundle
// (key included, for a caller that keeps it elsewhere), nil when none was made.
func Bootstrap(ctx context.Context, cl *k8s.Cluster, opts BootstrapOptions) (*BootstrapReport, map[string][]byte) {
	rep := &BootstrapReport{}
	var crlMu sync.Mutex
	user := opts.CRLs.Progress
	opts.CRLs.Progress = func(r *CRLSyncResult) {
		crlMu.Lock()
		rep.CRLs = append(rep.CRLs, r)
		crlMu.Unlock()
		if user != nil {
			user(r)
		}
	}
	res, files, err := bootstrap(ctx, cl, opts)
	slices.SortFunc(rep.CRLs, func(a, b *CRLSyncResult) int { return strings.Compare(a.Cluster, b.Cluster) })
	rep.InstallResult = res
	if err == nil && opts.Out != "" && !opts.Install.DryRun {
		dir := filepath.Join(opts.Out, cl.Name)
		var unlock func()
		if unlock, err = ca.PrepareOutDir(ctx, opts.Out, opts.Log); err == nil {
			_, err = ca.WriteDir(dir, files, ca.WriteOptions{})
			unlock()
		}
		if err != nil {
			err = fmt.Errorf("cluster %s: cacerts installed, but writing the bundle to %s failed: %w", cl.Name, dir, err)
		} else {
			rep.BundleDir = dir
		}
	}
	if err != nil {
		rep.Err, rep.Error = err, err.Error()
	}
	return rep, files
}

// bootstrap is Bootstrap up to the install.
func bootstrap(ctx context.Context, cl *k8s.Cluster, opts BootstrapOptions) (*k8s.InstallResult, map[string][]byte, error) {
	in := opts.Install
	ns := namespaceOr(in.Namespace)
	res := &k8s.InstallResult{Cluster: cl.Name, Namespace: ns, DryRun: in.DryRun}
	if opts.Source == nil || opts.Source.Issuer == nil {
		return res, nil, fmt.Errorf("cluster %s: bootstrap: no issuer given", cl.Name)
	}
	p := opts.Profile
	p.Cluster = cl.Name
	p.Subject.Locality = []string{cl.Name}
	if err := p.Validate(); err != nil {
		return res, nil, invalid(err)
	}
	if opts.Out != "" {
		if err := ca.CheckWritable(filepath.Join(opts.Out, cl.Name), false); errors.Is(err, ca.ErrExists) {
			return res, nil, invalid(fmt.Errorf("%w: bootstrap never replaces a bundle folder; choose another folder", err))
		} else if err != nil {
			return res, nil, invalid(err)
		}
	}
	if err := ca.CheckProfiles(opts.Source.Issuer.Chain(), []ca.Profile{p}, time.Now()); err != nil {
		return res, nil, invalid(err)
	}
	if opts.Out != "" {
		if err := ca.CheckDirWritable(opts.Out); err != nil {
			return res, nil, invalid(err)
		}
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
	b, err := ca.Mint(ctx, opts.Source.Issuer, p)
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
	if opts.Source.CRLAuthority == nil {
		return invalid(fmt.Errorf("cluster %s: CRLs are on in the mesh, and the root source keeps no CRL: %w", cl.Name, ErrNoRootCRL))
	}
	if sync.AnchorCRLs, err = opts.Source.rootCRLs(sync.DryRun)(ctx); err != nil {
		return fmt.Errorf("cluster %s: the root's CRL: %w", cl.Name, err)
	}
	sync.Pending = []*ca.Bundle{b}
	res, err := SyncCRLs(ctx, opts.Mesh, sync)
	if err != nil {
		return fmt.Errorf("cluster %s: not installed, as its CA's CRL did not reach every cluster of the mesh: %w", cl.Name, err)
	}
	if err := SettleCRLs(ctx, slogOrNil(opts.Log), opts.CRLSettle, res, sync.DryRun); err != nil {
		return fmt.Errorf("cluster %s: not installed: waiting for the mesh's proxies to read the new CRLs: %w", cl.Name, err)
	}
	return nil
}

// slogOrNil is l as a Logger, nil when l is: a nil *slog.Logger in the interface
// would not compare equal to nil.
func slogOrNil(l *slog.Logger) Logger {
	if l == nil {
		return nil
	}
	return l
}
