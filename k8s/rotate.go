package k8s

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/textfmt"
)

// Outcome is what Rotate did in one cluster.
type Outcome string

// Outcomes. Rotated, NotDue and (in a dry run) Due leave the cluster healthy;
// Locked and Failed do not.
const (
	// OutcomeRotated: a new intermediate was minted and installed.
	OutcomeRotated Outcome = "rotated"
	// OutcomeNotDue: the installed intermediate is fine; nothing was written.
	OutcomeNotDue Outcome = "not-due"
	// OutcomeDue: a dry run found the cluster due; nothing was minted or written.
	OutcomeDue Outcome = "due"
	// OutcomeLocked: the cluster is due, but another holder kept its Lease.
	OutcomeLocked Outcome = "locked"
	// OutcomeFailed: see the error.
	OutcomeFailed Outcome = "failed"
	// OutcomeRevoked: the cluster's CA is revoked; it is given no new one unless
	// re-admitted by name (package mesh, RotateOptions.Readmit).
	OutcomeRevoked Outcome = "revoked"
)

// OK reports whether the outcome leaves the cluster healthy.
func (o Outcome) OK() bool {
	return o == OutcomeRotated || o == OutcomeNotDue || o == OutcomeDue
}

// ErrOtherRoot means the installed intermediate chains to another root than the
// current one; Rotate replaces it only with RotateOptions.AllowNewRoot.
var ErrOtherRoot = errors.New("installed intermediate is signed by another root than the current one")

// RotateOptions controls Rotate.
type RotateOptions struct {
	// Namespace holds cacerts; empty means DefaultNamespace.
	Namespace string
	// Issuer signs new intermediates. Its Anchor (the current root, or the Vault
	// issuer that signs) is what an installed intermediate must chain to: one that
	// does not is due (with AllowNewRoot) or refused with ErrOtherRoot.
	Issuer ca.Issuer
	// Profile is the new intermediates' profile; Rotate sets Cluster and the
	// subject's L= to the cluster's name.
	Profile ca.Profile
	// Format is the layout to install; empty keeps the installed one (istio when
	// there is none).
	Format ca.Format
	// RenewBefore says when an intermediate is due (ca.RenewBefore.RenewAt); the
	// zero value means ca.DefaultRenewBefore (a third of its lifetime left).
	RenewBefore ca.RenewBefore
	// Force rotates every cluster, due or not.
	Force bool
	// AllowNewRoot rotates clusters whose intermediate chains to another root.
	AllowNewRoot bool
	// DryRun decides and reports; it takes no Lease, mints nothing, writes nothing.
	DryRun bool
	// KeepBackups and RestartIstiod are passed to Install.
	KeepBackups   int
	RestartIstiod bool
	// Lock is the Lease taken around each rotation; Namespace defaults to the
	// cacerts namespace. Lock.Holder is required unless DryRun.
	Lock LeaseOptions
	// Now is the time decisions are made at; nil means time.Now.
	Now func() time.Time
	// CRLTTL is the life of the CRL signed for a new intermediate in a cluster
	// whose cacerts has CRLs; 0 means ca.DefaultCRLTTL.
	CRLTTL time.Duration
	// Minted are new intermediates minted ahead (package mesh, MintAhead), by
	// cluster name: Rotate installs the cluster's one instead of minting, if the
	// cluster is still due under the Lease.
	Minted map[string]*ca.Bundle
	// Seen is, by cluster name, the serial of the installed CA when its Minted
	// intermediate was decided on: when another CA is installed since (another run
	// rotated it while this one spread CRLs), the cluster is rotated only if it is
	// due on its own, even with Force.
	Seen map[string]string

	// beforeLock, for tests, runs after the first decision and before the Lease
	// is taken.
	beforeLock func()
}

func (o RotateOptions) namespace() string {
	if o.Namespace == "" {
		return DefaultNamespace
	}
	return o.Namespace
}

func (o RotateOptions) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// Validate checks the options that do not depend on a cluster.
func (o RotateOptions) Validate() error {
	switch {
	case o.Issuer == nil:
		return errors.New("rotate: no issuer given (a dry run needs one too: its Anchor decides what is due)")
	case o.Issuer.Anchor() == nil:
		return errors.New("rotate: the issuer names no certificate it signs under (Anchor)")
	case o.Lock.Holder == "" && !o.DryRun:
		return errors.New("rotate: no lock holder identity given")
	}
	if err := o.RenewBefore.Validate(o.Profile.TTL); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	return nil
}

// RotateResult is what Rotate found and did in one cluster. It never holds key
// material.
type RotateResult struct {
	Cluster   string  `json:"cluster"`
	Namespace string  `json:"namespace"`
	Outcome   Outcome `json:"outcome"`
	DryRun    bool    `json:"dryRun,omitempty"`
	// Due tells whether the installed intermediate was due (or forced).
	Due bool `json:"due"`
	// Reason says why it was due or not, in words.
	Reason string `json:"reason,omitempty"`
	// Before describes the cacerts found, nil when there was none.
	Before *ca.Report `json:"before,omitempty"`
	// After describes the bundle installed, nil when none was.
	After *ca.Report `json:"after,omitempty"`
	// NotAfter is the not-after of the intermediate in cacerts after the run
	// (the zero time when there is none or it could not be read).
	NotAfter time.Time `json:"notAfter,omitzero"`
	// RemainingSeconds is NotAfter minus the decision time, in seconds.
	RemainingSeconds int64 `json:"remainingSeconds,omitempty"`
	// RenewAt is when the intermediate in cacerts becomes due.
	RenewAt time.Time `json:"renewAt,omitzero"`
	// LockedBy is the holder of the Lease that kept this run out (or, in a dry
	// run, that holds it now).
	LockedBy string `json:"lockedBy,omitempty"`
	// Backup names the Secret the previous cacerts was copied to.
	Backup string `json:"backup,omitempty"`
	// PrunedBackups are older backups deleted to keep KeepBackups.
	PrunedBackups []string `json:"prunedBackups,omitempty"`
	// IstiodRestarted names the Deployments restarted.
	IstiodRestarted []string `json:"istiodRestarted,omitempty"`
	// ResourceVersion is cacerts' resourceVersion after the run.
	ResourceVersion string   `json:"resourceVersion,omitempty"`
	Warnings        []string `json:"warnings,omitempty"`
}

// decision is what one read of cacerts says.
type decision struct {
	rv        string
	format    ca.Format
	report    *ca.Report
	roots     []*x509.Certificate // installed roots, read leniently
	due       bool                // due on its own (not forced)
	reason    string
	otherRoot bool // chains to another root than the anchor
	cert      *x509.Certificate
	left      time.Duration
	renewAt   time.Time
}

// Rotate renews the intermediate of cl when it is due:
//
//   - cacerts is read and judged: it is due when missing, failing istiod's checks,
//     chaining to another root than opts.Issuer's Anchor (only with AllowNewRoot; otherwise
//     Rotate fails with ErrOtherRoot), or with less life left than RenewBefore;
//     Force makes every cluster due. A cluster that is not due gets no write at
//     all, not even of the Lease.
//   - the Lease (opts.Lock) is taken, waiting up to opts.Lock.Wait; a Lease held by
//     another process makes the outcome Locked, unless cacerts is no longer due
//     when the wait ends (that process rotated it).
//   - cacerts is read and judged again under the Lease: if another run rotated it
//     meanwhile, nothing more is done (even with Force).
//   - a new intermediate (new key) is minted with opts.Issuer and verified; its
//     root-cert.pem keeps the other roots installed next to the current one (a
//     root rotation in progress), then Install installs it: backup first,
//     optimistic concurrency, the whole Secret at once.
//   - cacerts is read back and must hold the new intermediate; the Lease is
//     released.
//
// The result is returned even with an error, as far as Rotate got. Errors name
// the cluster.
func Rotate(ctx context.Context, cl *Cluster, opts RotateOptions) (*RotateResult, error) {
	ns := opts.namespace()
	res := &RotateResult{Cluster: cl.Name, Namespace: ns, DryRun: opts.DryRun, Outcome: OutcomeFailed}
	if err := opts.Validate(); err != nil {
		return res, fmt.Errorf("cluster %s: %w", cl.Name, err)
	}
	d, err := decide(ctx, cl, opts)
	if err != nil {
		return res, err
	}
	force := opts.Force
	if seen, ok := opts.Seen[cl.Name]; ok && opts.Minted[cl.Name] != nil && seen != installedSerial(d.cert) {
		force = false // its CA changed since the intermediate was minted ahead: another run rotated it
	}
	res.record(d, force)
	if !res.Due {
		res.Outcome = OutcomeNotDue
		if force != opts.Force {
			res.Reason = "rotated meanwhile by another run; " + d.reason
		}
		return res, nil
	}
	if d.otherRoot && !opts.AllowNewRoot {
		return res, otherRootError(cl.Name, d, opts)
	}
	lock := opts.Lock
	if lock.Namespace == "" {
		lock.Namespace = ns
	}
	if opts.DryRun {
		res.Outcome = OutcomeDue
		holder, until, err := LeaseHolder(ctx, cl, lock)
		switch {
		case err != nil:
			res.Warnings = append(res.Warnings, fmt.Sprintf("could not read the lock: %v", err))
		case holder != "":
			res.LockedBy = holder
			res.Warnings = append(res.Warnings, fmt.Sprintf("locked by %s until %s: a run now would wait for it", holder, until.UTC().Format(time.RFC3339)))
		}
		return res, nil
	}

	if opts.beforeLock != nil {
		opts.beforeLock()
	}
	lease, err := AcquireLease(ctx, cl, lock)
	if err != nil {
		var le *LockedError
		if !errors.As(err, &le) {
			return res, err
		}
		res.LockedBy = le.Holder
		// The holder may have rotated it while we waited.
		if d2, err2 := decide(ctx, cl, opts); err2 == nil && d2.rv != d.rv && !d2.due {
			res.record(d2, false)
			res.Outcome = OutcomeNotDue
			res.Reason = "rotated meanwhile by " + le.Holder + "; " + d2.reason
			return res, nil
		}
		res.Outcome = OutcomeLocked
		return res, err
	}
	if w := lease.TakeoverWarning(); w != "" {
		res.Warnings = append(res.Warnings, w)
	}
	defer func() {
		if w := lease.ReleaseWarning(ctx); w != "" {
			res.Warnings = append(res.Warnings, w)
		}
	}()
	lctx := lease.Context()

	// Judge again under the Lease: another run may have rotated it meanwhile.
	d2, err := decide(lctx, cl, opts)
	if err != nil {
		return res, LeaseCause(lctx, err)
	}
	if d2.rv != d.rv {
		res.record(d2, false)
		if !res.Due {
			res.Outcome = OutcomeNotDue
			res.Reason = "rotated meanwhile by another writer; " + d2.reason
			return res, nil
		}
		if d2.otherRoot && !opts.AllowNewRoot {
			return res, otherRootError(cl.Name, d2, opts)
		}
	}
	return res, rotateLocked(lctx, cl, opts, d2, res)
}

// rotateLocked mints (or takes the one minted ahead), installs and checks, under
// the Lease.
func rotateLocked(ctx context.Context, cl *Cluster, opts RotateOptions, d *decision, res *RotateResult) error {
	p := opts.Profile
	p.Cluster = cl.Name
	p.Subject.Locality = []string{cl.Name}
	b := opts.Minted[cl.Name]
	if b == nil {
		var err error
		if b, err = ca.Mint(ctx, opts.Issuer, p); err != nil {
			return LeaseCause(ctx, err)
		}
	}
	// Keep the other roots the cluster trusts (a root rotation in progress), unless
	// the cluster moves to a root it did not trust yet (AllowNewRoot): then its
	// root-cert.pem is the issuer's.
	if ca.ContainsCert(d.roots, b.Roots[0]) {
		for _, r := range d.roots {
			if !ca.ContainsCert(b.Roots, r) {
				b.Roots = append(b.Roots, r)
			}
		}
	}
	format := opts.Format
	if format == "" {
		format = d.format
	}
	files, err := b.Files(format)
	if err != nil {
		return fmt.Errorf("cluster %s: %w", cl.Name, err)
	}
	ires, err := Install(ctx, cl, files, InstallOptions{
		Namespace:     opts.namespace(),
		AllowNewRoot:  opts.AllowNewRoot,
		KeepBackups:   opts.KeepBackups,
		RestartIstiod: opts.RestartIstiod,
		Now:           opts.Now,
		CRLTTL:        opts.CRLTTL,
	})
	if ires != nil {
		res.Backup, res.PrunedBackups, res.IstiodRestarted = ires.Backup, ires.PrunedBackups, ires.IstiodRestarted
		res.Warnings = append(res.Warnings, ires.Warnings...)
	}
	if err != nil {
		return LeaseCause(ctx, err)
	}
	if ires.Before != nil && d.report != nil && ires.Before.Serial != d.report.Serial {
		res.Warnings = append(res.Warnings, fmt.Sprintf("cacerts changed between the decision (serial %s) and the install (serial %s): that one was backed up and replaced",
			d.report.Serial, ires.Before.Serial))
	}
	// Read it back: the cluster must now hold the new intermediate, whole.
	s, err := cl.Client.CoreV1().Secrets(opts.namespace()).Get(ctx, SecretName, metav1.GetOptions{})
	if err != nil {
		return LeaseCause(ctx, apiError(cl.Name, "get", "secrets", opts.namespace(), fmt.Errorf("read back after install: %w", err)))
	}
	got, rep, err := ca.ParseBundle(SecretFiles(s), ca.VerifyOptions{Now: opts.now()})
	if err != nil {
		return fmt.Errorf("cluster %s: cacerts read back after install fails verification: %w", cl.Name, err)
	}
	if !got.Cert.Equal(b.Cert) {
		return fmt.Errorf("cluster %s: cacerts read back after install holds serial %s, not the new intermediate's %s: another writer replaced it",
			cl.Name, rep.Serial, ca.FormatSerial(b.Cert))
	}
	res.After = rep
	res.Outcome = OutcomeRotated
	res.ResourceVersion = s.ResourceVersion
	res.NotAfter = b.Cert.NotAfter.UTC()
	now := opts.now()
	res.RemainingSeconds = int64(b.Cert.NotAfter.Sub(now) / time.Second)
	res.RenewAt = opts.RenewBefore.RenewAt(b.Cert).UTC()
	return nil
}

// LeaseCause explains an error that came from losing the Lease.
func LeaseCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrLeaseLost) {
		return fmt.Errorf("%w; stopped: %w", cause, err)
	}
	return err
}

func otherRootError(cluster string, d *decision, opts RotateOptions) error {
	return fmt.Errorf("cluster %s: %w: %s (current root %s); rotating would change the roots its workloads trust, which breaks cross-cluster mTLS until every cluster moves: finish a root rotation, or allow it explicitly",
		cluster, ErrOtherRoot, d.reason, textfmt.Fingerprint(ca.Fingerprint(currentRoot(opts.Issuer))))
}

// currentRoot is the root iss signs under, or its anchor when it cannot tell.
func currentRoot(iss ca.Issuer) *x509.Certificate {
	if r := ca.RootOf(iss); r != nil {
		return r
	}
	return iss.Anchor()
}

// record copies a decision into the result.
func (r *RotateResult) record(d *decision, force bool) {
	r.Before = d.report
	r.Due = d.due || force
	r.Reason = d.reason
	if force && !d.due {
		r.Reason = "forced; " + d.reason
	}
	r.ResourceVersion = d.rv
	r.NotAfter, r.RemainingSeconds, r.RenewAt = time.Time{}, 0, time.Time{}
	if d.cert != nil {
		r.NotAfter = d.cert.NotAfter.UTC()
		r.RemainingSeconds = int64(d.left / time.Second)
		r.RenewAt = d.renewAt.UTC()
	}
}

// decide reads cacerts and judges it.
func decide(ctx context.Context, cl *Cluster, opts RotateOptions) (*decision, error) {
	ns := opts.namespace()
	now := opts.now()
	s, err := cl.Client.CoreV1().Secrets(ns).Get(ctx, SecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return &decision{format: ca.FormatIstio, due: true, reason: fmt.Sprintf("no %s Secret in namespace %s", SecretName, ns)}, nil
	}
	if err != nil {
		return nil, apiError(cl.Name, "get", "secrets", ns, err)
	}
	return judge(s, opts, now), nil
}

// judge decides about one cacerts Secret at now. It is pure.
func judge(s *corev1.Secret, opts RotateOptions, now time.Time) *decision {
	files := SecretFiles(s)
	d := &decision{rv: s.ResourceVersion, format: ca.FormatIstio}
	if f, err := ca.DetectFormat(files); err == nil {
		d.format = f
	}
	d.roots = installedRoots(files, d.format)
	b, rep, err := ca.ParseBundle(files, ca.VerifyOptions{Now: now})
	d.report = rep
	anchor := opts.Issuer.Anchor()
	root := currentRoot(opts.Issuer)
	rootFP := ca.Fingerprint(root)
	if err != nil {
		d.due = true
		d.reason = "installed cacerts fails istiod's checks: " + err.Error()
		// A root change can be told without a valid bundle when the root is known.
		if ca.IsSelfSigned(root) && len(rep.RootFingerprints) > 0 && !slices.Contains(rep.RootFingerprints, rootFP) {
			d.otherRoot = true
			d.reason += fmt.Sprintf("; it trusts roots %s", shortFingerprints(rep.RootFingerprints))
		}
		return d
	}
	d.cert = b.Cert
	d.left = b.Cert.NotAfter.Sub(now)
	rb := opts.RenewBefore
	d.renewAt = rb.RenewAt(b.Cert)
	if !b.VerifiesAt(anchor, now) {
		if !root.Equal(anchor) && b.VerifiesAt(root, now) {
			// Another issuing CA under the same root: the trust bundle stays.
			d.due = true
			d.reason = fmt.Sprintf("installed intermediate (serial %s) is signed by %s, not by the current signing CA %s (same root)", rep.Serial, b.Cert.Issuer, anchor.Subject)
			return d
		}
		d.due, d.otherRoot = true, true
		d.reason = fmt.Sprintf("installed intermediate (serial %s) chains to root %s, not to the current root", rep.Serial, rootOf(b))
		return d
	}
	due, left := rb.Due(b.Cert, now)
	if due {
		d.due = true
		d.reason = fmt.Sprintf("%s left, under renew-before %s", describeLeft(left), rb.Describe())
		return d
	}
	d.reason = fmt.Sprintf("%s left; due on %s with renew-before %s", describeLeft(left), d.renewAt.UTC().Format(time.DateOnly), rb.Describe())
	return d
}

// describeLeft prints remaining life: whole days from two days on ("364 days"),
// hours and minutes below ("23h59m").
func describeLeft(left time.Duration) string {
	if left >= 48*time.Hour {
		return strconv.FormatInt(int64(left/(24*time.Hour)), 10) + " days"
	}
	return textfmt.Duration(left)
}

// rootOf names the root b's chain ends in.
func rootOf(b *ca.Bundle) string {
	for _, c := range b.Chain {
		if !c.Equal(b.Cert) && ca.IsSelfSigned(c) {
			return textfmt.Fingerprint(ca.Fingerprint(c))
		}
	}
	if len(b.Roots) > 0 {
		return textfmt.Fingerprint(ca.Fingerprint(b.Roots[0]))
	}
	return "unknown"
}

// installedRoots parses the roots file of an installed bundle, ignoring what does
// not parse.
func installedRoots(files map[string][]byte, f ca.Format) []*x509.Certificate {
	certs, _ := ca.ParseCertificatesPEM(files[ca.RootsFileName(f)])
	return certs
}

// installedSerial is c's serial in hex, "" for no certificate.
func installedSerial(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	return ca.FormatSerial(c)
}
