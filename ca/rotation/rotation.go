// Package rotation plans the replacement of a mesh's root CA. It is pure: given
// each cluster's installed bundle (as package ca parses it) and the record of its
// last step, it says where every cluster stands and what one run does, and makes
// the files of each step; package k8s reads and writes the clusters.
//
// Istio supports replacing a mesh's root only as a sequence of steps, each of which
// must reach every cluster (and every workload) before the next starts:
//
//	step 0  trusts old              intermediate from old   (where it starts)
//	step 1  trusts old + new        intermediate from old   ("trust both")
//	step 2  trusts old + new        intermediate from new   ("switch")
//	step 3  trusts new              intermediate from new   ("drop")
//
// Two clusters one step apart still complete mutual TLS with each other; two steps
// apart they do not (a cluster at step 0 rejects certificates from a cluster at step
// 2).
package rotation

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/textfmt"
)

// Step is where a cluster (or a mesh) stands in a root rotation from an
// old root to a new one.
type Step int

// The steps of a root rotation.
const (
	// StepUnknown: the bundle is foreign to the rotation or inconsistent.
	StepUnknown Step = -1
	// StepOldRoot: trusts the old root only; intermediate signed by the old root.
	StepOldRoot Step = 0
	// StepTrustBoth: trusts old and new roots; intermediate still from the old root.
	StepTrustBoth Step = 1
	// StepSwitched: trusts old and new roots; intermediate from the new root.
	StepSwitched Step = 2
	// StepNewRoot: trusts the new root only; intermediate from the new root.
	StepNewRoot Step = 3
)

// Name is the step's short name: old-root, trust-both, switched, new-root or
// unknown.
func (s Step) Name() string {
	switch s {
	case StepOldRoot:
		return "old-root"
	case StepTrustBoth:
		return "trust-both"
	case StepSwitched:
		return "switched"
	case StepNewRoot:
		return "new-root"
	}
	return "unknown"
}

// String is the step's number and name, e.g. "1 (trust-both)".
func (s Step) String() string {
	if s == StepUnknown {
		return "unknown"
	}
	return fmt.Sprintf("%d (%s)", int(s), s.Name())
}

// Describe says what a bundle at step s holds, e.g. "trusts old + new roots,
// intermediate from the old root".
func (s Step) Describe() string {
	switch s {
	case StepOldRoot:
		return "trusts the old root only, intermediate from the old root"
	case StepTrustBoth:
		return "trusts old + new roots, intermediate from the old root"
	case StepSwitched:
		return "trusts old + new roots, intermediate from the new root"
	case StepNewRoot:
		return "trusts the new root only, intermediate from the new root"
	}
	return "foreign to this rotation or inconsistent"
}

// Action names the change that brings a cluster to step s: "trust both", "switch"
// or "drop".
func (s Step) Action() string {
	switch s {
	case StepTrustBoth:
		return "trust both"
	case StepSwitched:
		return "switch"
	case StepNewRoot:
		return "drop"
	}
	return "none"
}

// ParseStep reads a step to move to: 1, 2 or 3, or trust-both, switch,
// drop.
func ParseStep(s string) (Step, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "trust-both":
		return StepTrustBoth, nil
	case "2", "switch", "switched":
		return StepSwitched, nil
	case "3", "drop", "new-root":
		return StepNewRoot, nil
	}
	return StepUnknown, fmt.Errorf("unknown root rotation step %q (want 1 or trust-both, 2 or switch, 3 or drop)", s)
}

// Why a root rotation refuses to go on. Plan errors wrap one of them.
var (
	// ErrUnreadable: a cluster could not be read; its step is unknown.
	ErrUnreadable = errors.New("cluster state unknown")
	// ErrInconsistent: a cluster's bundle is foreign to the rotation or
	// inconsistent, or the clusters disagree on the old root.
	ErrInconsistent = errors.New("inconsistent root rotation state")
	// ErrBehind: the step asked for needs clusters that are behind to
	// catch up first, or clusters are more than one step apart.
	ErrBehind = errors.New("clusters are behind")
	// ErrTooEarly: the minimum time between two steps has not passed.
	ErrTooEarly = errors.New("too early for the next step")
	// ErrIncomplete: clusters recorded as part of the rotation are missing
	// from this run.
	ErrIncomplete = errors.New("not every cluster of the rotation was given")
	// ErrSameRoot: the new root is the old one (or has its key).
	ErrSameRoot = errors.New("the new root is not new")
	// ErrNotLoaded: a cluster's istiod has not published the roots of the
	// step its cacerts is at: it has not taken the change yet, or refused it.
	ErrNotLoaded = errors.New("istiod has not loaded the last step")
	// ErrNeedsAdopt: clusters run on several roots, or on istiod's own CA: only a
	// convergence (Options.Adopt) takes them as they are. It comes with
	// ErrInconsistent.
	ErrNeedsAdopt = errors.New("a convergence takes clusters on several roots as they are")
	// ErrTargetInMesh: the new root is a cluster's own CA (istiod's self-signed
	// one), whose key lives in that cluster.
	ErrTargetInMesh = errors.New("the new root is a cluster's own CA")
	// ErrExpiresTooSoon: a self-signed CA in play expires before the
	// convergence can end.
	ErrExpiresTooSoon = errors.New("a CA in play expires too soon")
)

// signerName names the root that anchors an intermediate.
const (
	signerOld = "old"
	signerNew = "new"
	// signerSelf: istiod's own self-signed CA (adopted or not).
	signerSelf = "self-signed"
	// signerOther: another root in play (a convergence).
	signerOther = "other"
)

// fingerprints lists certificates' short fingerprints, e.g. "sha256:ab12..,sha256:cd34..".
func fingerprints(certs []*x509.Certificate) string {
	if len(certs) == 0 {
		return "no roots"
	}
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = shortFP(c)
	}
	return strings.Join(out, " + ")
}

// shortFP prints a fingerprint as sha256:<first 16 hex digits>.
func shortFP(c *x509.Certificate) string { return textfmt.Fingerprint(ca.Fingerprint(c)) }

// StepOf tells where bundle b stands in the rotation from root old to root
// newRoot: which of the two it trusts (root-cert.pem) and which signed its
// intermediate. old may be nil when no cluster tells it any more (the rotation is
// complete): then only StepNewRoot can be recognised. A bundle that trusts another
// root, whose intermediate chains to neither, or whose intermediate chains to a
// root it does not trust, is StepUnknown with an error wrapping
// ErrInconsistent.
func StepOf(b *ca.Bundle, old, newRoot *x509.Certificate) (Step, error) {
	if b == nil || b.Cert == nil {
		return StepUnknown, fmt.Errorf("%w: no bundle", ErrInconsistent)
	}
	if newRoot == nil {
		return StepUnknown, errors.New("no new root given")
	}
	var trustsOld, trustsNew bool
	var foreign []string
	for _, r := range b.Roots {
		switch {
		case r.Equal(newRoot):
			trustsNew = true
		case old != nil && r.Equal(old):
			trustsOld = true
		default:
			foreign = append(foreign, shortFP(r))
		}
	}
	if len(foreign) > 0 {
		oldFP := "unknown"
		if old != nil {
			oldFP = shortFP(old)
		}
		return StepUnknown, fmt.Errorf("%w: trusts %s, which is neither the old root (%s) nor the new root (%s)",
			ErrInconsistent, strings.Join(foreign, ", "), oldFP, shortFP(newRoot))
	}
	signer := ""
	switch {
	case b.SignedUnder(newRoot):
		signer = signerNew
	case old != nil && b.SignedUnder(old):
		signer = signerOld
	default:
		return StepUnknown, fmt.Errorf("%w: its intermediate (%s) chains to neither the old nor the new root", ErrInconsistent, b.Cert.Subject)
	}
	switch {
	case signer == signerOld && trustsOld && !trustsNew:
		return StepOldRoot, nil
	case signer == signerOld && trustsOld && trustsNew:
		return StepTrustBoth, nil
	case signer == signerNew && trustsOld && trustsNew:
		return StepSwitched, nil
	case signer == signerNew && trustsNew:
		return StepNewRoot, nil
	case signer == signerOld:
		return StepUnknown, fmt.Errorf("%w: its intermediate is signed by the old root, which its root-cert.pem does not hold", ErrInconsistent)
	default:
		return StepUnknown, fmt.Errorf("%w: its intermediate is signed by the new root, which its root-cert.pem does not hold (step 1, trust both, was skipped)", ErrInconsistent)
	}
}

// Record is what meshpki records on a cluster when it moves it to a step
// (as an annotation on cacerts), so that the next run knows when that was.
type Record struct {
	Step Step      `json:"step"`
	At   time.Time `json:"at"`
	// OldRoot and NewRoot are the two roots' SHA-256 fingerprints (hex).
	OldRoot string `json:"oldRoot,omitempty"`
	NewRoot string `json:"newRoot"`
	// Clusters are the clusters of the run that made the step: every later run
	// must include all of them.
	Clusters []string `json:"clusters,omitempty"`
	// Observed: meshpki did not make this step; it found the cluster there at At.
	Observed bool `json:"observed,omitempty"`
	// By is the step of the run that brought the cluster to Step, when that is
	// another one: 1 for a cluster that signed under the new root already and
	// reached step 2 by a convergence's first step.
	By Step `json:"by,omitempty"`
	// Roots are, in a convergence, the fingerprints of the roots in play other
	// than the new one (OldRoot is set when there is only one).
	Roots []string `json:"roots,omitempty"`
}

// matches reports whether r belongs to the rotation from old to newRoot (old may
// be unknown: "", as in a convergence, which many roots join).
func (r *Record) matches(oldFP, newFP string) bool {
	return r != nil && r.NewRoot == newFP && (oldFP == "" || r.OldRoot == "" || r.OldRoot == oldFP)
}

// Input is one cluster as a root rotation sees it.
type Input struct {
	Cluster string
	// Bundle is the cluster's installed bundle; nil when it could not be read.
	Bundle *ca.Bundle
	// Err says why the cluster could not be read (or holds no usable bundle).
	Err error
	// Record is the last step meshpki recorded on the cluster, nil if none.
	Record *Record
	// Published is the roots file the cluster's istiod publishes (ConfigMap
	// istio-ca-root-cert), byte for byte what it has loaded. PublishedKnown is false
	// when no istiod publishes one (none runs there) or it could not be read.
	Published      []byte
	PublishedKnown bool
	// SelfSigned: the cluster has no cacerts of its own (or only the one istiod
	// made for itself): istiod signs with its own self-signed CA, and Bundle is that
	// CA as istiod holds it (its certificate is also its only root).
	SelfSigned bool
}

// Options tunes PlanRoot.
type Options struct {
	// NewRoot is the root the mesh moves to.
	NewRoot *x509.Certificate
	// ToStep is the step to move to; zero means the next one (or, when clusters
	// are at different steps, the step the furthest of them reached).
	ToStep Step
	// MinStepInterval is the least time a cluster must have spent at a step
	// (since it was recorded) before it moves on from it. Zero disables the check.
	MinStepInterval time.Duration
	// Now is the time of the run; zero means time.Now().
	Now time.Time
	// IgnoreIstiod moves clusters on even when their istiod has not published the
	// roots of the step they are at.
	IgnoreIstiod bool
	// Adopt takes clusters as they are: on other roots (another mesh), on an
	// issuing CA's chain, or on istiod's own self-signed CA; see PlanRoot.
	Adopt bool
}

// Istiod states in Cluster.Istiod.
const (
	IstiodLoadedStep    = "loaded"
	IstiodNotLoadedStep = "not loaded"
	IstiodNone          = "no istiod"
)

// Cluster is one cluster's place in a root rotation plan.
type Cluster struct {
	Cluster  string `json:"cluster"`
	Step     Step   `json:"step"`
	StepName string `json:"stepName"`
	// IntermediateFrom is "old" or "new": the root that signed the intermediate.
	IntermediateFrom string `json:"intermediateFrom,omitempty"`
	// Trusts holds the fingerprints of the roots in root-cert.pem.
	Trusts []string `json:"trusts,omitempty"`
	// Since is when the cluster reached Step, as recorded; zero when unknown.
	Since time.Time `json:"since,omitzero"`
	// Unrecorded: the cluster is past step 0 with no record of when it got there.
	Unrecorded bool `json:"unrecorded,omitempty"`
	// Next is the step this run brings the cluster to; Step when it stays.
	Next Step `json:"next"`
	// Problem says why Step is unknown.
	Problem string `json:"problem,omitempty"`
	// Istiod says whether the cluster's istiod publishes the roots of its cacerts:
	// "loaded", "not loaded" or "no istiod".
	Istiod string `json:"istiod,omitempty"`
	// Signer is the fingerprint of the root the cluster's CA chains to.
	Signer string `json:"signer,omitempty"`
	// SelfSigned: istiod signs with its own CA and the cluster has no cacerts of
	// its own; Adopted: its cacerts keeps istiod's own CA as signing CA (a
	// convergence's step 1).
	SelfSigned bool `json:"selfSigned,omitempty"`
	Adopted    bool `json:"adopted,omitempty"`
	// By is Record.By of the step the cluster is at.
	By Step `json:"-"`
}

// Moves reports whether the plan changes this cluster.
func (c Cluster) Moves() bool { return c.Next != c.Step && c.Step != StepUnknown }

// Plan is what one run of a root rotation does to a mesh.
type Plan struct {
	// OldRoot is the root being replaced; nil when no cluster holds it any more.
	OldRoot        *x509.Certificate `json:"-"`
	NewRoot        *x509.Certificate `json:"-"`
	OldFingerprint string            `json:"oldRoot,omitempty"`
	NewFingerprint string            `json:"newRoot"`
	// Roots are the roots in play, the new one last: what every cluster trusts at
	// steps 1 and 2 (the old and the new root, in a root rotation).
	Roots            []*x509.Certificate `json:"-"`
	RootFingerprints []string            `json:"roots,omitempty"`
	// Adopt: a convergence (Options.Adopt).
	Adopt bool `json:"adopt,omitempty"`
	// MeshStep is the lowest step of all clusters, StepUnknown when any is unknown.
	MeshStep Step `json:"meshStep"`
	// Target is the step this run brings clusters to (MeshStep when none moves).
	Target   Step      `json:"target"`
	Clusters []Cluster `json:"clusters"`
	// NextAllowed is when the clusters that must move next may do so
	// (MinStepInterval after they reached their step); zero when they may now.
	NextAllowed time.Time `json:"nextAllowed,omitzero"`
	// Err is why the run must change no cluster; nil when it may. It wraps one
	// of the Err* errors of this package.
	Err error `json:"-"`
	// Refused is Err's message, for JSON.
	Refused string `json:"refused,omitempty"`
}

// Done reports whether every cluster is at the last step: the rotation is over.
func (p *Plan) Done() bool {
	if len(p.Clusters) == 0 {
		return false
	}
	for _, c := range p.Clusters {
		if c.Step != StepNewRoot {
			return false
		}
	}
	return true
}

// Moving lists the clusters this run changes, in input order (none when Err is set).
func (p *Plan) Moving() []string {
	if p.Err != nil {
		return nil
	}
	var out []string
	for _, c := range p.Clusters {
		if c.Moves() {
			out = append(out, c.Cluster)
		}
	}
	return out
}

// Unrecorded lists the clusters past step 0 with no record of when they got
// there: a run records them as first seen now.
func (p *Plan) Unrecorded() []string {
	var out []string
	for _, c := range p.Clusters {
		if c.Unrecorded {
			out = append(out, c.Cluster)
		}
	}
	return out
}

// refusal is a plan's error that carries several causes.
type refusal struct {
	msg  string
	errs []error
}

func (r *refusal) Error() string   { return r.msg }
func (r *refusal) Unwrap() []error { return r.errs }

func (p *Plan) refuse(err error) *Plan {
	p.Err, p.Refused = err, err.Error()
	return p
}

// PlanRoot works out where a mesh stands in the rotation to opts.NewRoot and what
// one run does.
//
// A root rotation (the default) moves one mesh from one old root to the new one:
// the old root is the one that anchors the intermediates the new root does not,
// and all clusters must agree on it. With opts.Adopt, the clusters may run on
// different roots today (a convergence: meshes merged, clusters adopted from
// istiod's own self-signed CA): every root any cluster trusts is "in play", and the
// steps become
//
//	step 1  trusts every root in play and the new one; its CA unchanged
//	step 2  trusts them all;                            CA from the new root
//	step 3  trusts the new root only;                   CA from the new root
//
// Two clusters one step apart complete mutual TLS both ways from step 1 on: at each
// step a proxy that has the new trust bundle accepts what was signed at the step
// before, and a proxy still on the old one accepts what is signed at this step. A
// cluster that already signs under the new root reaches step 2 with step 1.
//
// The plan refuses (Err, changing nothing) when:
//
//   - a cluster could not be read (ErrUnreadable);
//   - a cluster's bundle is foreign or inconsistent, or (without Adopt) clusters
//     disagree on the old root or one signs with istiod's own CA (ErrInconsistent);
//   - clusters recorded by earlier steps are missing (ErrIncomplete);
//   - (without Adopt) clusters are two or more steps apart, or the step asked for
//     needs clusters that are behind to catch up first (ErrBehind, naming them);
//   - the new root is, or shares its key with, a root to be dropped, or is istiod's
//     own CA in a cluster (ErrSameRoot, ErrTargetInMesh);
//   - a self-signed CA in play expires before the convergence can end
//     (ErrExpiresTooSoon);
//   - an istiod has not loaded its cluster's last step (ErrNotLoaded);
//   - a cluster that would move, or whose trust the move relies on, has spent less
//     than MinStepInterval at its step, or has no record of when it got there
//     (ErrTooEarly, NextAllowed).
//
// Otherwise the clusters at the lowest step move one step on; clusters already
// there or past it stay untouched, so a rerun is a no-op.
func PlanRoot(in []Input, opts Options) *Plan {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	newRoot := opts.NewRoot
	p := &Plan{NewRoot: newRoot, MeshStep: StepUnknown, Target: StepUnknown, Adopt: opts.Adopt}
	if newRoot == nil {
		return p.refuse(errors.New("no new root given"))
	}
	p.NewFingerprint = ca.Fingerprint(newRoot)
	switch opts.ToStep {
	case 0, StepTrustBoth, StepSwitched, StepNewRoot:
	default:
		return p.refuse(fmt.Errorf("step %d: a root rotation has steps 1 (trust both), 2 (switch) and 3 (drop)", int(opts.ToStep)))
	}
	if len(in) == 0 {
		return p.refuse(errors.New("no clusters"))
	}
	p.Clusters = make([]Cluster, len(in))
	var unreadable []string
	for i, c := range in {
		p.Clusters[i] = Cluster{Cluster: c.Cluster, Step: StepUnknown, StepName: StepUnknown.Name(), Next: StepUnknown, SelfSigned: c.SelfSigned}
		if c.Bundle == nil {
			why := "no bundle"
			if c.Err != nil {
				why = c.Err.Error()
			}
			p.Clusters[i].Problem = why
			unreadable = append(unreadable, c.Cluster+" ("+why+")")
			continue
		}
		p.Clusters[i].Adopted = !c.SelfSigned && ca.IsSelfSigned(c.Bundle.Cert)
		for _, r := range c.Bundle.Roots {
			p.Clusters[i].Trusts = append(p.Clusters[i].Trusts, ca.Fingerprint(r))
		}
		switch {
		case !c.PublishedKnown:
			p.Clusters[i].Istiod = IstiodNone
		case bytes.Equal(c.Published, c.Bundle.RootsFile):
			p.Clusters[i].Istiod = IstiodLoadedStep
		default:
			p.Clusters[i].Istiod = IstiodNotLoadedStep
		}
	}
	if len(unreadable) > 0 {
		// The clusters' own errors stay reachable (errors.Is, errors.As): a
		// permission refused, a cluster that only a convergence can take.
		var why []error
		for _, c := range in {
			if c.Bundle == nil && c.Err != nil {
				why = append(why, c.Err)
			}
		}
		return p.refuse(&refusal{msg: fmt.Sprintf("%v: could not read %s; nothing was changed (a rotation step must reach every cluster)",
			ErrUnreadable, strings.Join(unreadable, "; ")), errs: append([]error{ErrUnreadable}, why...)})
	}

	// The roots in play: the old one, or with Adopt every root trusted anywhere.
	var union []*x509.Certificate
	if opts.Adopt {
		union = rootsInPlay(in, newRoot)
		if len(union) == 2 {
			p.OldRoot = union[0]
		}
	} else {
		var selfSigned []string
		for _, c := range in {
			if c.SelfSigned || ca.IsSelfSigned(c.Bundle.Cert) {
				selfSigned = append(selfSigned, c.Cluster)
			}
		}
		if len(selfSigned) > 0 {
			return p.refuse(fmt.Errorf("%w: %s %s with istiod's own self-signed CA, not an intermediate of the mesh's root: %w",
				ErrInconsistent, strings.Join(selfSigned, ", "), verbSign(len(selfSigned)), ErrNeedsAdopt))
		}
		old, err := meshOldRoot(in, newRoot)
		if err != nil {
			return p.refuse(err)
		}
		p.OldRoot = old
		if old != nil {
			union = []*x509.Certificate{old}
		}
		union = append(union, newRoot)
	}
	if p.OldRoot != nil {
		p.OldFingerprint = ca.Fingerprint(p.OldRoot)
	} else if !opts.Adopt {
		// No cluster holds the old root any more: take it from the records.
		for _, c := range in {
			if c.Record != nil && c.Record.NewRoot == p.NewFingerprint && c.Record.OldRoot != "" {
				p.OldFingerprint = c.Record.OldRoot
				break
			}
		}
	}
	p.Roots = union
	for _, r := range union {
		p.RootFingerprints = append(p.RootFingerprints, ca.Fingerprint(r))
	}
	for _, r := range union[:len(union)-1] {
		if bytes.Equal(r.RawSubjectPublicKeyInfo, newRoot.RawSubjectPublicKeyInfo) {
			what := "the old root"
			if opts.Adopt {
				what = "a root in play"
			}
			return p.refuse(fmt.Errorf("%w: it has the same key as %s %s (the mesh's current root): intermediates of either chain to both, and nothing needs rotating",
				ErrSameRoot, what, shortFP(r)))
		}
	}
	for _, c := range in {
		if (c.SelfSigned || ca.IsSelfSigned(c.Bundle.Cert)) && c.Bundle.Cert.Equal(newRoot) {
			return p.refuse(fmt.Errorf("%w: the new root %s is the CA of cluster %s itself, whose key lives in that cluster: converge onto a root whose key is kept outside the mesh",
				ErrTargetInMesh, shortFP(newRoot), c.Cluster))
		}
	}

	// Classify every cluster.
	var inconsistent []string
	allSignNew := true
	for i, c := range in {
		row := &p.Clusters[i]
		step, err := stepIn(c.Bundle, union, newRoot, opts.Adopt)
		row.Step, row.StepName, row.Next = step, step.Name(), step
		if err != nil {
			row.Problem = strings.TrimPrefix(err.Error(), ErrInconsistent.Error()+": ")
			inconsistent = append(inconsistent, c.Cluster+": "+row.Problem)
			continue
		}
		row.Signer = ca.Fingerprint(signerOf(c.Bundle))
		switch {
		case c.Bundle.SignedUnder(newRoot):
			row.IntermediateFrom = signerNew
		case p.OldRoot != nil && c.Bundle.SignedUnder(p.OldRoot):
			row.IntermediateFrom = signerOld
		case row.SelfSigned || row.Adopted:
			row.IntermediateFrom = signerSelf
		default:
			row.IntermediateFrom = signerOther
		}
		allSignNew = allSignNew && row.IntermediateFrom == signerNew
	}
	if len(inconsistent) > 0 {
		return p.refuse(fmt.Errorf("%w: %s; nothing was changed", ErrInconsistent, strings.Join(inconsistent, "; ")))
	}
	// With Adopt, a cluster that trusts the new root only while others still sign
	// under another root must trust theirs again: it starts over at step 0.
	if opts.Adopt && !allSignNew {
		for i := range p.Clusters {
			if c := &p.Clusters[i]; c.Step == StepNewRoot {
				c.Step, c.StepName, c.Next = StepOldRoot, StepOldRoot.Name(), StepOldRoot
			}
		}
	}
	for i, c := range in {
		row := &p.Clusters[i]
		if row.Step == StepOldRoot {
			continue // nothing has changed yet: no record needed
		}
		if r := c.Record; r.matches(p.OldFingerprint, p.NewFingerprint) && r.Step == row.Step && !r.At.IsZero() {
			row.Since, row.By = r.At, r.By
		} else {
			row.Unrecorded = true
		}
	}

	lo, hi := StepNewRoot, StepOldRoot
	for _, c := range p.Clusters {
		lo, hi = min(lo, c.Step), max(hi, c.Step)
	}
	if lo == hi && lo == StepNewRoot {
		p.MeshStep, p.Target = StepNewRoot, StepNewRoot
		return p // done: nothing can move, whichever clusters were given
	}

	// Every cluster recorded by an earlier step must be part of this run.
	given := map[string]bool{}
	for _, c := range in {
		given[c.Cluster] = true
	}
	missing := map[string]bool{}
	for _, c := range in {
		if c.Record.matches(p.OldFingerprint, p.NewFingerprint) {
			for _, n := range c.Record.Clusters {
				if !given[n] {
					missing[n] = true
				}
			}
		}
	}
	if len(missing) > 0 {
		return p.refuse(fmt.Errorf("%w: earlier steps of this rotation covered %s, which this run lacks; pass every cluster of the mesh (a step must reach all of them)",
			ErrIncomplete, strings.Join(slices.Sorted(maps.Keys(missing)), ", ")))
	}

	p.MeshStep = lo
	if hi-lo > 1 && !opts.Adopt {
		return p.refuse(fmt.Errorf("%w: clusters are more than one step apart (%s): workloads of clusters two steps apart cannot complete mutual TLS; meshpki will not guess how to repair this: restore the clusters ahead from their %s backups, or bring the others to step %d by hand; if they are meshes that never shared a root, %w",
			ErrBehind, p.describeSteps(), "cacerts-backup-*", int(hi)-1, ErrNeedsAdopt))
	}

	target := opts.ToStep
	switch {
	case target == 0:
		target = lo + 1
	case target <= lo:
		p.Target = lo
		return p // every cluster is at the asked step or past it: a no-op
	case target == lo+1:
	default:
		var behind []string
		for _, c := range p.Clusters {
			if c.Step < target-1 {
				behind = append(behind, fmt.Sprintf("%s (at step %s)", c.Cluster, c.Step))
			}
		}
		return p.refuse(fmt.Errorf("%w: step %d (%s) needs every cluster at step %s first; behind: %s; nothing was changed (a run without a step asked for brings them there)",
			ErrBehind, int(target), target.Action(), target-1, strings.Join(behind, ", ")))
	}
	p.Target = target

	// A new root that is istiod's own CA, or a self-signed CA in play that would
	// expire before the last step: refused before anything moves.
	if target == StepTrustBoth {
		end := now.Add(2 * max(opts.MinStepInterval, time.Hour))
		for i, c := range in {
			if (p.Clusters[i].SelfSigned || p.Clusters[i].Adopted) && c.Bundle.Cert.NotAfter.Before(end) {
				return p.refuse(fmt.Errorf("%w: cluster %s signs with a self-signed CA (%s) that expires at %s, before the convergence can end (two steps of %s after the first): its workloads would lose their certificates mid-way; replace it first (restart istiod without cacerts so that it makes a new one, or install a bundle)",
					ErrExpiresTooSoon, c.Cluster, shortFP(c.Bundle.Cert), c.Bundle.Cert.NotAfter.UTC().Format(time.RFC3339), textfmt.Interval(max(opts.MinStepInterval, time.Hour))))
			}
		}
	}

	// A cluster has reached its step only when its istiod publishes that step's roots:
	// istiod refuses a roots file it cannot take and keeps its old CA, and nobody
	// else notices.
	if !opts.IgnoreIstiod {
		var notLoaded []string
		for i, c := range p.Clusters {
			if c.Step >= target-1 && c.Istiod == IstiodNotLoadedStep {
				pub, _ := ca.ParseCertificatesPEM(in[i].Published)
				what := fingerprints(pub)
				if ca.SameCertificates(pub, in[i].Bundle.Roots) {
					what += " in other bytes"
				}
				notLoaded = append(notLoaded, fmt.Sprintf("%s (istiod publishes %s, cacerts holds %s)", c.Cluster, what, fingerprints(in[i].Bundle.Roots)))
			}
		}
		if len(notLoaded) > 0 {
			for i := range p.Clusters {
				p.Clusters[i].Next = p.Clusters[i].Step
			}
			return p.refuse(fmt.Errorf("%w: step %d (%s) needs every istiod to have loaded the roots of step %s; not loaded in %s; nothing was changed. istiod may not have seen the change yet, or refused it (its log says \"Updating new ROOT-CA not supported\")",
				ErrNotLoaded, int(target), target.Action(), target-1, strings.Join(notLoaded, "; ")))
		}
	}

	// Every cluster that moves must have spent MinStepInterval at its step; at a
	// switch after a convergence's first step, so must the clusters that reached
	// step 2 by it (they trust the other roots only since then).
	var early, unrecorded []string
	for i := range p.Clusters {
		c := &p.Clusters[i]
		waits := c.Step < target && c.Step != StepOldRoot ||
			target == StepSwitched && c.Step == StepSwitched && c.By == StepTrustBoth
		if c.Step < target {
			c.Next = target
		}
		if !waits || opts.MinStepInterval <= 0 {
			continue
		}
		allowed := c.Since.Add(opts.MinStepInterval)
		if c.Unrecorded {
			allowed = now.Add(opts.MinStepInterval)
			unrecorded = append(unrecorded, c.Cluster)
		} else if !now.Before(allowed) {
			continue
		} else {
			early = append(early, fmt.Sprintf("%s reached step %s at %s", c.Cluster, c.Step, c.Since.UTC().Format(time.RFC3339)))
		}
		if allowed.After(p.NextAllowed) {
			p.NextAllowed = allowed
		}
	}
	if len(early)+len(unrecorded) > 0 {
		for i := range p.Clusters {
			p.Clusters[i].Next = p.Clusters[i].Step
		}
		var why []string
		if len(early) > 0 {
			why = append(why, strings.Join(early, ", "))
		}
		if len(unrecorded) > 0 {
			why = append(why, fmt.Sprintf("%s got to its step without meshpki (no record of when): the wait starts now", strings.Join(unrecorded, ", ")))
		}
		return p.refuse(fmt.Errorf("%w: step %d (%s) is allowed from %s, %s after the last step (the minimum step interval): %s; workloads need that long to pick up the last change",
			ErrTooEarly, int(target), target.Action(), p.NextAllowed.UTC().Format(time.RFC3339), textfmt.Interval(opts.MinStepInterval), strings.Join(why, "; ")))
	}
	return p
}

func verbSign(n int) string {
	if n == 1 {
		return "signs"
	}
	return "sign"
}

// rootsInPlay is every root a cluster trusts, and newRoot last: the roots every
// cluster trusts at steps 1 and 2 of a convergence. The order is the first
// cluster's roots file, then the other roots as clusters show them, so that a
// cluster's file is extended in an order that does not depend on the run.
func rootsInPlay(in []Input, newRoot *x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range in {
		if c.Bundle == nil {
			continue
		}
		for _, r := range c.Bundle.Roots {
			if !r.Equal(newRoot) && !ca.ContainsCert(out, r) {
				out = append(out, r)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b *x509.Certificate) int { return strings.Compare(ca.Fingerprint(a), ca.Fingerprint(b)) })
	return append(out, newRoot)
}

// signerOf is the root b's signing CA chains to, among the roots it trusts; nil
// when none.
func signerOf(b *ca.Bundle) *x509.Certificate {
	for _, r := range b.Roots {
		if b.SignedUnder(r) {
			return r
		}
	}
	return nil
}

// StepIn tells where bundle b stands in the move of a mesh whose roots in play are
// union (Plan.Roots, newRoot last) to newRoot: StepOf for a root rotation; with
// adopt (a convergence), by what b trusts and signs under alone (PlanRoot then
// sends a cluster that trusts only the new root back to step 0 while others sign
// under another).
func StepIn(b *ca.Bundle, union []*x509.Certificate, newRoot *x509.Certificate, adopt bool) (Step, error) {
	return stepIn(b, union, newRoot, adopt)
}

func stepIn(b *ca.Bundle, union []*x509.Certificate, newRoot *x509.Certificate, adopt bool) (Step, error) {
	if !adopt {
		var old *x509.Certificate
		if len(union) == 2 {
			old = union[0]
		}
		return StepOf(b, old, newRoot)
	}
	if b == nil || b.Cert == nil {
		return StepUnknown, fmt.Errorf("%w: no bundle", ErrInconsistent)
	}
	if signerOf(b) == nil {
		return StepUnknown, fmt.Errorf("%w: its CA (%s) chains to none of the roots it trusts", ErrInconsistent, b.Cert.Subject)
	}
	signsNew := b.SignedUnder(newRoot)
	trustsAll := ca.SubsetOf(union, b.Roots)
	onlyNew := len(b.Roots) == 1 && b.Roots[0].Equal(newRoot)
	switch {
	case onlyNew && signsNew:
		return StepNewRoot, nil
	case trustsAll && signsNew:
		return StepSwitched, nil
	case trustsAll:
		return StepTrustBoth, nil
	}
	return StepOldRoot, nil
}

// describeSteps lists the clusters by step, e.g. "step 0: east; step 2: north, west".
func (p *Plan) describeSteps() string {
	by := map[Step][]string{}
	for _, c := range p.Clusters {
		by[c.Step] = append(by[c.Step], c.Cluster)
	}
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, fmt.Sprintf("step %d: %s", int(s), strings.Join(by[s], ", ")))
	}
	return strings.Join(parts, "; ")
}

// meshOldRoot finds the old root: the one root other than newRoot that anchors
// intermediates, or failing that the one root other than newRoot that clusters
// trust. nil (and no error) means no cluster holds an old root any more.
func meshOldRoot(in []Input, newRoot *x509.Certificate) (*x509.Certificate, error) {
	type cand struct {
		cert     *x509.Certificate
		clusters []string
	}
	pick := func(anchors bool) (*x509.Certificate, error) {
		var cands []*cand
		for _, c := range in {
			if c.Bundle == nil {
				continue
			}
			for _, r := range c.Bundle.Roots {
				if r.Equal(newRoot) || anchors && !c.Bundle.SignedUnder(r) {
					continue
				}
				i := slices.IndexFunc(cands, func(x *cand) bool { return x.cert.Equal(r) })
				if i < 0 {
					cands = append(cands, &cand{cert: r})
					i = len(cands) - 1
				}
				if !slices.Contains(cands[i].clusters, c.Cluster) {
					cands[i].clusters = append(cands[i].clusters, c.Cluster)
				}
				if anchors {
					break // one anchor per cluster
				}
			}
		}
		switch len(cands) {
		case 0:
			return nil, nil
		case 1:
			return cands[0].cert, nil
		}
		var parts []string
		for _, c := range cands {
			parts = append(parts, fmt.Sprintf("%s by %s", shortFP(c.cert), strings.Join(c.clusters, ", ")))
		}
		what := "trusted"
		if anchors {
			what = "signing intermediates"
		}
		return nil, fmt.Errorf("%w: the clusters disagree on the old root (roots other than the new one %s: %s): a root rotation moves one mesh from one root to another; %w",
			ErrInconsistent, what, strings.Join(parts, "; "), ErrNeedsAdopt)
	}
	if old, err := pick(true); old != nil || err != nil {
		return old, err
	}
	return pick(false)
}

// Profile is the profile of the intermediate that replaces current at step 2
// (switch): the same subject, SANs, key type and pathlen, and the same lifetime
// (rounded down to the hour, as issuers backdate by minutes). When current is a
// self-signed CA (istiod's own, adopted), whose subject, life and lack of SAN are
// no intermediate's, it is Istio's intermediate profile (ca.IntermediateProfile)
// with current's key type.
func Profile(cluster string, current *x509.Certificate) (ca.Profile, error) {
	if ca.IsSelfSigned(current) {
		kt, err := ca.KeyTypeOf(current.PublicKey)
		if err != nil {
			kt = ca.ECDSAP256
		}
		p := ca.IntermediateProfile(cluster, ca.DefaultOrg)
		p.KeyType = kt
		return p, p.Validate()
	}
	kt, err := ca.KeyTypeOf(current.PublicKey)
	if err != nil {
		return ca.Profile{}, fmt.Errorf("cluster %s: intermediate key %w", cluster, err)
	}
	ttl := current.NotAfter.Sub(current.NotBefore)
	if ttl > 2*time.Hour {
		ttl = ttl.Truncate(time.Hour)
	}
	pathLen := current.MaxPathLen
	if pathLen < 0 || !current.MaxPathLenZero && pathLen == 0 {
		pathLen = 0 // no constraint: use Istio's pathlen 0
	}
	subject := current.Subject
	subject.Names, subject.ExtraNames = nil, nil
	p := ca.Profile{
		Cluster:    cluster,
		Subject:    subject,
		DNSNames:   slices.Clone(current.DNSNames),
		URIs:       slices.Clone(current.URIs),
		TTL:        ttl,
		KeyType:    kt,
		MaxPathLen: pathLen,
	}
	return p, p.Validate()
}

// Files returns the bundle files (as in a Secret) that move a cluster from the step
// before target to target in the rotation from old to newRoot, given its current
// files: FilesIn with the roots in play old and newRoot.
func Files(current map[string][]byte, target Step, old, newRoot *x509.Certificate, switched *ca.Bundle) (map[string][]byte, error) {
	if target == StepTrustBoth && old == nil {
		return nil, errors.New("step 1 (trust both) needs the old root")
	}
	if target == StepSwitched && old == nil {
		return nil, errors.New("step 2 (switch) needs the old root and a new intermediate")
	}
	var roots []*x509.Certificate
	if old != nil {
		roots = append(roots, old)
	}
	return FilesIn(current, target, append(roots, newRoot), newRoot, switched)
}

// FilesIn returns the bundle files (as in a Secret) that move a cluster from the
// step before target to target, given its current files and the roots in play
// (Plan.Roots, newRoot last). The roots file is only ever extended or trimmed,
// never reordered or re-encoded (see ca.KeepRootsFile), so that every istiod from
// 1.20 takes each step on its hot reload:
//
//   - step 1: every root in play missing from the roots file is appended to it as
//     it is; every other file is kept byte for byte (intermediate, key,
//     cert-chain.pem);
//   - step 2 (switch): the files of switched, a bundle minted under the new root; the
//     roots file stays byte for byte what step 1 made of it; files other than the
//     bundle's (e.g. ca-crl.pem) are kept;
//   - step 3 (drop): the roots file keeps only the new root's bytes; every other file
//     is kept.
func FilesIn(current map[string][]byte, target Step, roots []*x509.Certificate, newRoot *x509.Certificate, switched *ca.Bundle) (map[string][]byte, error) {
	if _, err := ca.DetectFormat(current); err != nil {
		return nil, err
	}
	// A Secret may carry both layouts (istiod reads the tls one): change both alike.
	var formats []ca.Format
	for _, f := range []ca.Format{ca.FormatIstio, ca.FormatTLS} {
		if _, ok := current[ca.CertFileName(f)]; ok {
			formats = append(formats, f)
		}
	}
	out := maps.Clone(current)
	for _, f := range formats {
		rootsFile := ca.RootsFileName(f)
		switch target {
		case StepTrustBoth:
			out[rootsFile] = ca.KeepRootsFile(current[rootsFile], roots)
		case StepSwitched:
			if switched == nil {
				return nil, errors.New("step 2 (switch) needs a new intermediate")
			}
			if !switched.SignedUnder(newRoot) {
				return nil, fmt.Errorf("the new intermediate (%s) does not chain to the new root %s", switched.Cert.Subject, shortFP(newRoot))
			}
			b := *switched
			b.Roots = roots
			b.RootsFile = ca.KeepRootsFile(current[rootsFile], b.Roots)
			files, err := b.Files(f)
			if err != nil {
				return nil, err
			}
			maps.Copy(out, files)
		case StepNewRoot:
			out[rootsFile] = ca.KeepRootsFile(current[rootsFile], []*x509.Certificate{newRoot})
		default:
			return nil, fmt.Errorf("step %d: a root rotation has steps 1, 2 and 3", int(target))
		}
	}
	return out, nil
}
