package mesh

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// CRLSyncOptions configure SyncCRLs.
type CRLSyncOptions struct {
	// Namespace holds cacerts; empty means DefaultNamespace.
	Namespace string
	// AnchorCRLs are the root source's CRLs (the root's, and an issuing CA's),
	// current: they list the revoked cluster CAs.
	AnchorCRLs []*x509.RevocationList
	// AnchorRoots, when AnchorCRLs is empty, are the roots whose CRLs are taken as
	// the clusters hold them: for each, the newest current CRL it signed found in
	// any cluster's ca-crl.pem (ErrNoRootCRL when none is). This is for a command
	// that has no root source (install): it spreads, it never signs a root's CRL.
	AnchorRoots []*x509.Certificate
	// TTL is the life of each cluster CA's CRL signed here; 0 means
	// ca.DefaultCRLTTL. Refresh: a CRL with less life left is signed again; 0 means
	// ca.DefaultCRLRefresh.
	TTL, Refresh time.Duration
	// Concurrency is how many clusters are read and written at once (see Each).
	Concurrency int
	// Lock, when set, is the Lease taken around each cluster's write.
	Lock *k8s.LeaseOptions
	// DryRun reads, signs and checks, and writes nothing.
	DryRun bool
	// Now is the time CRLs are signed and checked at; nil means time.Now.
	Now func() time.Time
	// Progress, if set, is called as each cluster's write finishes.
	Progress func(*CRLSyncResult)
	// Pending are bundles about to be installed (a new cluster's, before bootstrap
	// or install): their CAs' CRLs are signed with their keys and spread to every
	// cluster first, so that the others accept what the new CA signs from its
	// first moment. SyncCRLs sets each one's CRLFile to the mesh set, ready to
	// install.
	Pending []*ca.Bundle
	// Replacing names the clusters whose cacerts the caller replaces next with one
	// of Pending (a rotation, an install). A cacerts there that fails verification
	// (no istiod can load it: broken, or its CA expired) is then neither read nor
	// written, and does not fail the run: the pending bundle brings it the set.
	Replacing []string
}

// CRLSyncResult is one cluster's outcome of SyncCRLs.
type CRLSyncResult struct {
	Cluster string `json:"cluster"`
	// Action is what happened to its cacerts: created is never used; updated,
	// unchanged, or skipped (no cacerts, revoked, or unreadable).
	Action k8s.Action `json:"action"`
	// Signed tells that a fresh CRL of the cluster's own CA was signed.
	Signed bool `json:"signedOwnCRL"`
	// Revoked tells that the cluster's CA is revoked: its cacerts is left alone.
	Revoked bool `json:"revoked,omitempty"`
	// CRLs is how many CRLs its ca-crl.pem holds after the run.
	CRLs int `json:"crls"`
	// NextUpdate is the earliest nextUpdate among them: when the set must have
	// been signed again.
	NextUpdate time.Time `json:"nextUpdate,omitzero"`
	Warnings   []string  `json:"warnings,omitempty"`
	Err        error     `json:"-"`
}

// LogAttrs are r's slog attributes: cluster, action, crls, and error only when
// there is one (no error=<nil> on every line).
func (r *CRLSyncResult) LogAttrs() []any {
	attrs := []any{"cluster", r.Cluster, "action", r.Action, "crls", r.CRLs}
	if r.Err != nil {
		attrs = append(attrs, "error", r.Err)
	}
	return attrs
}

// DefaultCRLSettle is how long Bootstrap and RotateRoot wait, by default, between
// spreading new CRLs and installing a CA whose workloads need them: Istio's
// proxies read the CRLs from the istio-ca-crl ConfigMap mounted as a volume
// (security.CACRLFilePath, /var/run/secrets/istio/crl/ca-crl.pem, in
// pkg/security/security.go; the volume in pkg/kube/inject's template), and the
// kubelet refreshes such volumes on its sync period (1m by default) plus its
// cache's delay. Until then a proxy refuses peers signed by the new CA.
const DefaultCRLSettle = 90 * time.Second

// SettleCRLs waits d after a spread (res, SyncCRLs' results) that changed some
// cluster, unless dryRun: for the proxies to read the new CRLs (see
// DefaultCRLSettle). It logs the wait first, at Info on log (nil: none): what it
// waits for, how long, and that a wait of 0 (the CLI's --crl-settle 0) skips it.
// It returns early with ctx's cause.
func SettleCRLs(ctx context.Context, log Logger, d time.Duration, res []*CRLSyncResult, dryRun bool) error {
	if d <= 0 || dryRun || !slices.ContainsFunc(res, func(r *CRLSyncResult) bool { return r.Action == k8s.ActionUpdated }) {
		return nil
	}
	logInfo(log, "waiting for the mesh's proxies to read the new CRLs (the kubelet refreshes mounted ConfigMaps about once a minute) before the CA that needs them is installed",
		"wait", d, "until", time.Now().Add(d).UTC().Format(time.RFC3339), "skip", "--crl-settle 0 (or MESHPKI_CRL_SETTLE=0): the new CA's peers may be refused until their proxies read the CRLs")
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// ErrForgedCRL means a cluster's ca-crl.pem holds a CRL that names a CA of the
// mesh as its issuer (subject and key identifier) and that this CA did not sign:
// someone else wrote that Secret. SyncCRLs then writes nothing anywhere.
var ErrForgedCRL = errors.New("a CRL claims a mesh CA as its issuer, and that CA did not sign it")

// ErrNoRootCRL means CRLs are on in the mesh and no CRL of the root source was
// given: a new CA cannot join without the root's CRL in its set.
var ErrNoRootCRL = errors.New("no CRL of the root source")

// ErrRootCRLNotHeld means a job that spreads CRLs without a root source
// (Install) found no current CRL of the root in any cluster: the root source must
// sign and spread one first.
var ErrRootCRLNotHeld = errors.New("no cluster holds a current CRL of the root")

// rootCRLNotHeld is ErrRootCRLNotHeld for one root; it is ErrNoRootCRL too.
type rootCRLNotHeld struct{ root string }

func (e *rootCRLNotHeld) Error() string {
	return fmt.Sprintf("no cluster holds a current CRL of the root %s: %v", e.root, ErrNoRootCRL)
}

func (e *rootCRLNotHeld) Is(target error) bool {
	return target == ErrRootCRLNotHeld || target == ErrNoRootCRL
}

// ActionSkipped: SyncCRLs did not write this cluster's cacerts.
const ActionSkipped k8s.Action = "skipped"

// SyncCRLs makes every cluster's ca-crl.pem hold one current CRL of every CA of
// the mesh, as Envoy needs (ca.CheckChainCRLs): the root source's AnchorCRLs, and
// one per cluster CA, signed with that CA's key from its own cacerts (meshpki holds
// no other copy). A cluster CA's CRL still current for longer than Refresh is kept,
// so a second run changes nothing; CRLs found in any cluster's ca-crl.pem are kept
// while current (a cluster that cannot be read this time still has its CA's last
// CRL passed on). A cluster whose CA the AnchorCRLs revoke is left alone: it is
// cut off by the others, and its own istiod keeps what it has.
//
// A CRL in any cluster's file that claims a mesh CA as issuer and that this CA did
// not sign (ErrForgedCRL) stops the run before anything is written.
//
// Every Secret is written through Install, so istiod's checks (ca.CheckIstiodCRLs)
// are run before anything is sent. Results are in the clusters' order; the error
// joins the clusters' errors.
func SyncCRLs(ctx context.Context, clusters []*k8s.Cluster, opts CRLSyncOptions) ([]*CRLSyncResult, error) {
	now := time.Now()
	if opts.Now != nil {
		now = opts.Now()
	}
	ns := opts.Namespace
	if ns == "" {
		ns = k8s.DefaultNamespace
	}
	if len(opts.AnchorCRLs) == 0 && len(opts.AnchorRoots) == 0 {
		return nil, errors.New("no CRL of the root source: SyncCRLs needs the root's")
	}
	for _, crl := range opts.AnchorCRLs {
		if err := ca.CRLCurrent(crl, now); err != nil {
			return nil, fmt.Errorf("the root source's CRL: %w", err)
		}
	}
	reads := k8s.Each(ctx, clusters, opts.Concurrency, func(ctx context.Context, cl *k8s.Cluster) (*crlRead, error) {
		r, err := readForCRLs(ctx, cl, ns, now)
		if errors.Is(err, errUnusableCACerts) && slices.Contains(opts.Replacing, cl.Name) {
			return &crlRead{replaced: err}, nil
		}
		return r, err
	}, nil)
	if len(opts.AnchorCRLs) == 0 {
		anchors, err := heldRootCRLs(reads, opts.AnchorRoots, now)
		if err != nil {
			return nil, err
		}
		opts.AnchorCRLs = anchors
	}

	results := make([]*CRLSyncResult, len(clusters))
	// The CAs whose CRLs may be passed on: the mesh's, as the clusters' chains show.
	var cas []*x509.Certificate
	var errs []error
	for i, r := range reads {
		results[i] = &CRLSyncResult{Cluster: clusters[i].Name, Action: ActionSkipped}
		switch {
		case r.Err != nil:
			results[i].Err = r.Err
			errs = append(errs, r.Err)
		case r.Value.replaced != nil:
			results[i].Warnings = append(results[i].Warnings, fmt.Sprintf("%v: not read; the bundle replacing it brings the set", r.Value.replaced))
		case r.Value.bundle == nil:
			results[i].Warnings = append(results[i].Warnings, fmt.Sprintf("no %s Secret in namespace %s", k8s.SecretName, ns))
		default:
			for _, c := range r.Value.bundle.Chain {
				if !ca.ContainsCert(cas, c) {
					cas = append(cas, c)
				}
			}
		}
	}
	// A CRL that claims a mesh CA (or the root) as issuer but fails its signature
	// would be picked by Envoy for that CA and fail every peer it signed: stop.
	issuers := slices.Clone(cas)
	for _, r := range reads {
		if r.Err == nil && r.Value.bundle != nil {
			for _, c := range r.Value.bundle.Roots {
				if !ca.ContainsCert(issuers, c) {
					issuers = append(issuers, c)
				}
			}
		}
	}
	for i, r := range reads {
		if r.Err != nil || r.Value.bundle == nil {
			continue
		}
		if crl, c := ca.ForgedCRL(r.Value.crls, issuers); crl != nil {
			results[i].Err = fmt.Errorf("cluster %s: %s in %s holds a CRL (number %v) claiming to be from %s (key %x): %w; remove it (or restore a %s* Secret) and rerun",
				clusters[i].Name, ca.CRLFile, k8s.SecretName, crl.Number, c.Subject, c.SubjectKeyId, ErrForgedCRL, k8s.BackupPrefix)
			errs = append(errs, results[i].Err)
		}
	}
	if len(errs) > 0 && slices.ContainsFunc(errs, func(err error) bool { return errors.Is(err, ErrForgedCRL) }) {
		return results, errors.Join(errs...)
	}
	// The mesh set: the anchor's CRLs, and every current CRL a cluster holds that a
	// mesh CA signed (what a cluster holds from CAs no chain shows any more, such
	// as its previous intermediate's, it keeps for itself; see below).
	mesh := [][]*x509.RevocationList{opts.AnchorCRLs}
	for _, r := range reads {
		if r.Err == nil && r.Value.bundle != nil {
			mesh = append(mesh, notFrom(signedByAny(current(r.Value.crls, now), cas), opts.AnchorCRLs))
		}
	}
	known := ca.MergeCRLs(mesh...)
	for i, r := range reads {
		if r.Err != nil || r.Value.bundle == nil {
			continue
		}
		b := r.Value.bundle
		if ca.RevokedInChain(b.Chain, known) {
			results[i].Revoked = true
			results[i].Warnings = append(results[i].Warnings, fmt.Sprintf("its CA (serial %s) is revoked: cacerts is left as it is, and the other clusters refuse its workloads", ca.FormatSerial(b.Cert)))
			continue
		}
		if own := ca.CRLOf(known, b.Cert); own == nil || ca.NeedsRefresh(own, now, opts.Refresh) {
			crl, err := ca.SignCRL(b.Cert, b.Key, nil, nil, now, opts.TTL)
			if err != nil {
				results[i].Err = fmt.Errorf("cluster %s: %w", clusters[i].Name, err)
				errs = append(errs, results[i].Err)
				continue
			}
			mesh = append(mesh, []*x509.RevocationList{crl})
			results[i].Signed = true
		}
	}
	for _, b := range opts.Pending {
		crl, err := ca.SignCRL(b.Cert, b.Key, nil, nil, now, opts.TTL)
		if err != nil {
			return results, fmt.Errorf("pending bundle %s: %w", b.Cert.Subject, err)
		}
		mesh = append(mesh, []*x509.RevocationList{crl})
	}
	set := ca.MergeCRLs(mesh...)
	for _, b := range opts.Pending {
		b.CRLFile = ca.EncodeCRLsPEM(set...)
	}
	var unread []string
	for i, r := range reads {
		if r.Err != nil {
			unread = append(unread, clusters[i].Name)
		}
	}
	k8s.Each(ctx, clusters, opts.Concurrency, func(ctx context.Context, cl *k8s.Cluster) (struct{}, error) {
		i := slices.Index(clusters, cl)
		res, r := results[i], reads[i]
		if r.Err != nil || r.Value.bundle == nil || res.Revoked || res.Err != nil {
			return struct{}{}, nil
		}
		// Its own file also keeps, while current, the CRLs of CAs no chain shows
		// any more (its previous intermediate's, for the workloads it signed; a
		// new CA's another run spreads ahead). The set speaks for the mesh's CAs:
		// their older CRLs there are dropped. Only ca-crl.pem changes, made from
		// the Secret as it is when written (under the Lease, after every
		// re-read), so that a concurrent run's CRLs or rotation are not undone.
		var mine []*x509.RevocationList
		Rebase := func(installed map[string][]byte) (map[string][]byte, error) {
			held, _ := ca.ParseCRLsPEM(installed[ca.CRLFile]) // a broken file is what this replaces
			mine = ca.MergeCRLs(set, notOfCAs(notFrom(current(held, now), opts.AnchorCRLs), cas))
			files := maps.Clone(installed)
			files[ca.CRLFile] = ca.EncodeCRLsPEM(mine...)
			return files, nil
		}
		files, _ := Rebase(r.Value.files)
		ires, err := k8s.Install(ctx, cl, files, k8s.InstallOptions{Namespace: ns, Lock: opts.Lock, DryRun: opts.DryRun, Now: opts.Now, Rebase: Rebase})
		if ires != nil {
			res.Warnings = append(res.Warnings, ires.Warnings...)
		}
		if err != nil {
			res.Err = err
		} else {
			res.Action, res.CRLs, res.NextUpdate = ires.Action, len(mine), earliestNextUpdate(mine)
			if len(unread) > 0 {
				res.Warnings = append(res.Warnings, fmt.Sprintf("could not read clusters %v: the CRLs of their CAs are the last ones known", unread))
			}
		}
		if opts.Progress != nil {
			opts.Progress(res)
		}
		return struct{}{}, nil
	}, nil)
	for _, res := range results {
		if res.Err != nil && !slices.Contains(errs, res.Err) {
			errs = append(errs, res.Err)
		}
	}
	return results, errors.Join(errs...)
}

// CRLsEnabled reports whether some cluster's cacerts (in opts.Namespace) has
// ca-crl.pem: CRLs are on in the mesh. Unreadable clusters are skipped; the error
// is for when none could be read.
func CRLsEnabled(ctx context.Context, clusters []*k8s.Cluster, opts CRLSyncOptions) (bool, error) {
	ns := opts.Namespace
	if ns == "" {
		ns = k8s.DefaultNamespace
	}
	var errs []error
	on := false
	for _, r := range k8s.Each(ctx, clusters, opts.Concurrency, func(ctx context.Context, cl *k8s.Cluster) (bool, error) {
		s, err := k8s.GetCACerts(ctx, cl, ns)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		_, ok := s.Data[ca.CRLFile]
		return ok, nil
	}, nil) {
		on = on || r.Value
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	if on || len(errs) < len(clusters) {
		return on, nil
	}
	return false, errors.Join(errs...)
}

// InstalledCA reads the signing CA certificate of cl's cacerts in namespace ns
// (ca-cert.pem, or the first of tls.crt), without requiring the rest of the bundle
// to be valid: what revoking that CA needs.
func InstalledCA(ctx context.Context, cl *k8s.Cluster, ns string) (*x509.Certificate, error) {
	s, err := k8s.GetCACerts(ctx, cl, ns)
	if err != nil {
		return nil, err
	}
	files := k8s.SecretFiles(s)
	f, err := ca.DetectFormat(files)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: cacerts: %w", cl.Name, err)
	}
	certs, err := ca.ParseCertificatesPEM(files[ca.CertFileName(f)])
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("cluster %s: cacerts %s: no certificate: %w", cl.Name, ca.CertFileName(f), err)
	}
	return certs[0], nil
}

// crlRead is one cluster's cacerts as SyncCRLs reads it.
type crlRead struct {
	files  map[string][]byte
	bundle *ca.Bundle // nil: no cacerts, or replaced
	crls   []*x509.RevocationList
	// replaced is why a cacerts of CRLSyncOptions.Replacing was not read.
	replaced error
}

func readForCRLs(ctx context.Context, cl *k8s.Cluster, ns string, now time.Time) (*crlRead, error) {
	s, err := k8s.GetCACerts(ctx, cl, ns)
	if apierrors.IsNotFound(err) {
		return &crlRead{}, nil
	}
	if err != nil {
		return nil, err
	}
	r := &crlRead{files: k8s.SecretFiles(s)}
	if data, ok := r.files[ca.CRLFile]; ok {
		// A ca-crl.pem that does not parse is what this run replaces.
		r.crls, _ = ca.ParseCRLsPEM(data)
	}
	bundleFiles := k8s.SecretFiles(s)
	delete(bundleFiles, ca.CRLFile) // its CRL problems are what this run fixes
	b, _, err := ca.ParseBundle(bundleFiles, ca.VerifyOptions{Now: now})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w: %w", cl.Name, errUnusableCACerts, err)
	}
	r.bundle = b
	return r, nil
}

// errUnusableCACerts is a cacerts Secret that is there but fails verification.
var errUnusableCACerts = errors.New("cacerts fails verification")

// heldRootCRLs returns, for each of roots, the newest current CRL it signed that
// a cluster holds.
func heldRootCRLs(reads []k8s.Result[*crlRead], roots []*x509.Certificate, now time.Time) ([]*x509.RevocationList, error) {
	var out []*x509.RevocationList
	for _, root := range roots {
		var held []*x509.RevocationList
		for _, r := range reads {
			if r.Err == nil {
				held = append(held, keep(current(r.Value.crls, now), func(crl *x509.RevocationList) bool { return ca.SignedBy(crl, root) })...)
			}
		}
		if len(held) == 0 {
			return nil, &rootCRLNotHeld{root: root.Subject.String()}
		}
		out = append(out, ca.MergeCRLs(held)...)
	}
	return out, nil
}

// current keeps the CRLs current at now.
func current(crls []*x509.RevocationList, now time.Time) []*x509.RevocationList {
	return keep(crls, func(crl *x509.RevocationList) bool { return ca.CRLCurrent(crl, now) == nil })
}

// notFrom drops the CRLs of the CAs that signed anchors: the root source's CRL is
// the record, and a CRL of the root found in a cluster (even with a higher number,
// as after root-crl.pem was lost) never overrides it.
func notFrom(crls, anchors []*x509.RevocationList) []*x509.RevocationList {
	return keep(crls, func(crl *x509.RevocationList) bool {
		return !slices.ContainsFunc(anchors, func(a *x509.RevocationList) bool {
			return bytes.Equal(a.RawIssuer, crl.RawIssuer) && bytes.Equal(a.AuthorityKeyId, crl.AuthorityKeyId)
		})
	})
}

// notOfCAs drops the CRLs that name one of cas as their issuer (its subject and
// key identifier).
func notOfCAs(crls []*x509.RevocationList, cas []*x509.Certificate) []*x509.RevocationList {
	return keep(crls, func(crl *x509.RevocationList) bool {
		return !slices.ContainsFunc(cas, func(c *x509.Certificate) bool {
			return bytes.Equal(crl.RawIssuer, c.RawSubject) && bytes.Equal(crl.AuthorityKeyId, c.SubjectKeyId)
		})
	})
}

// signedByAny keeps the CRLs one of cas signed.
func signedByAny(crls []*x509.RevocationList, cas []*x509.Certificate) []*x509.RevocationList {
	return keep(crls, func(crl *x509.RevocationList) bool {
		return slices.ContainsFunc(cas, func(c *x509.Certificate) bool { return ca.SignedBy(crl, c) })
	})
}

// keep returns the CRLs of crls for which ok holds.
func keep(crls []*x509.RevocationList, ok func(*x509.RevocationList) bool) []*x509.RevocationList {
	var out []*x509.RevocationList
	for _, crl := range crls {
		if ok(crl) {
			out = append(out, crl)
		}
	}
	return out
}

func earliestNextUpdate(crls []*x509.RevocationList) time.Time {
	var next time.Time
	for _, crl := range crls {
		if next.IsZero() || crl.NextUpdate.Before(next) {
			next = crl.NextUpdate
		}
	}
	return next.UTC()
}

// SpreadForInstall readies an install of bundles (files[i] for targets[i], as
// Install takes them; nil ones are skipped) into a mesh with CRLs on: the CRLs of
// the bundles' CAs that are new to their cluster are signed with their keys and
// written first into every cluster of targets and mesh (SyncCRLs with them
// pending, the root's CRL as the clusters hold it: AnchorRoots), so that the
// others accept what a new CA signs from its first moment; a target with no
// cacerts yet, or one no istiod can load (it fails verification: broken, or its
// CA expired), gets the mesh set in its files, and the spread does not read it. With CRLs off everywhere, or no new
// CA, nothing is written and nil is returned. A failure leaves files as they were:
// install nothing then.
func SpreadForInstall(ctx context.Context, targets []*k8s.Cluster, files []map[string][]byte, mesh []*k8s.Cluster, opts CRLSyncOptions) ([]*CRLSyncResult, error) {
	ns := opts.Namespace
	if ns == "" {
		ns = k8s.DefaultNamespace
	}
	all := slices.Clone(targets)
	for _, cl := range mesh {
		if !slices.ContainsFunc(all, func(c *k8s.Cluster) bool { return c.Name == cl.Name }) {
			all = append(all, cl)
		}
	}
	if on, err := CRLsEnabled(ctx, all, opts); err != nil || !on {
		return nil, nil // off; or no cluster readable, which the installs report
	}
	now := time.Now()
	if opts.Now != nil {
		now = opts.Now()
	}
	var roots []*x509.Certificate
	fresh := map[int]*ca.Bundle{} // targets that get the mesh set in their files
	for i, cl := range targets {
		if files[i] == nil || files[i][ca.CRLFile] != nil {
			continue
		}
		b, _, err := ca.ParseBundle(files[i], ca.VerifyOptions{AllowRootKey: true, Now: now})
		if err != nil {
			continue // Install reports it
		}
		r, err := readForCRLs(ctx, cl, ns, now)
		switch {
		case errors.Is(err, errUnusableCACerts):
			// The install replaces a cacerts that no istiod can load (it does not
			// parse, or its CA expired): like a first one, it gets the mesh set,
			// and the spread does not read it.
			fresh[i] = b
			opts.Replacing = append(opts.Replacing, cl.Name)
		case err != nil:
			continue // unreadable: its install fails too, and says why
		case r.bundle == nil:
			fresh[i] = b
		case r.bundle.Cert.Equal(b.Cert):
			continue
		}
		opts.Pending = append(opts.Pending, b)
		for _, r := range b.Roots { // the root its chain ends at, not every trusted one
			if b.SignedUnder(r) && !ca.ContainsCert(roots, r) {
				roots = append(roots, r)
			}
		}
	}
	if len(opts.Pending) == 0 {
		return nil, nil
	}
	opts.AnchorCRLs, opts.AnchorRoots = nil, roots
	res, err := SyncCRLs(ctx, all, opts)
	if err != nil {
		return res, fmt.Errorf("spreading the new CAs' CRLs before the install: %w", err)
	}
	for i, b := range fresh {
		files[i][ca.CRLFile] = b.CRLFile
	}
	return res, nil
}
