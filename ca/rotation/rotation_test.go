package rotation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
)

// rrFixture is a root rotation from root A to root B (same subject, as two roots
// made with the default profile have), plus a foreign root C.
type rrFixture struct {
	a, b, c *ca.Root
	// byStep[s] is a bundle at step s for cluster "east".
	byStep map[Step]*ca.Bundle
}

func rrNewRoot(t testing.TB) *ca.Root {
	t.Helper()
	r, _, err := ca.CreateRoot(ca.DefaultRootProfile("Istio"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func rrMint(t testing.TB, root *ca.Root, cluster string) *ca.Bundle {
	t.Helper()
	b, err := ca.Mint(context.Background(), ca.NewLocalIssuer(root), ca.IntermediateProfile(cluster, "Istio"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rrWithRoots is b trusting roots (b itself is not changed).
func rrWithRoots(b *ca.Bundle, roots ...*ca.Root) *ca.Bundle {
	c := *b
	c.Roots = nil
	for _, r := range roots {
		c.Roots = append(c.Roots, r.Cert)
	}
	return &c
}

// rrSteps returns bundles for cluster at every step of the rotation from a to b.
func rrSteps(t testing.TB, a, b *ca.Root, cluster string) map[Step]*ca.Bundle {
	t.Helper()
	fromA, fromB := rrMint(t, a, cluster), rrMint(t, b, cluster)
	return map[Step]*ca.Bundle{
		StepOldRoot:   fromA,
		StepTrustBoth: rrWithRoots(fromA, a, b),
		StepSwitched:  rrWithRoots(fromB, b, a),
		StepNewRoot:   fromB,
	}
}

func newRRFixture(t testing.TB) *rrFixture {
	f := &rrFixture{a: rrNewRoot(t), b: rrNewRoot(t), c: rrNewRoot(t)}
	f.byStep = rrSteps(t, f.a, f.b, "east")
	return f
}

func TestStepOf(t *testing.T) {
	f := newRRFixture(t)
	fromA, fromB, fromC := f.byStep[StepOldRoot], f.byStep[StepNewRoot], rrMint(t, f.c, "east")
	for _, tc := range []struct {
		name string
		b    *ca.Bundle
		old  *x509.Certificate
		want Step
		err  string
	}{
		{"old only", fromA, f.a.Cert, StepOldRoot, ""},
		{"trust both, old first", rrWithRoots(fromA, f.a, f.b), f.a.Cert, StepTrustBoth, ""},
		{"trust both, new first", rrWithRoots(fromA, f.b, f.a), f.a.Cert, StepTrustBoth, ""},
		{"switched", rrWithRoots(fromB, f.b, f.a), f.a.Cert, StepSwitched, ""},
		{"switched, old first", rrWithRoots(fromB, f.a, f.b), f.a.Cert, StepSwitched, ""},
		{"new only", fromB, f.a.Cert, StepNewRoot, ""},
		{"new only, old unknown", fromB, nil, StepNewRoot, ""},
		{"old root unknown but trusted", rrWithRoots(fromB, f.b, f.a), nil, StepUnknown, "neither the old root (unknown)"},
		{"foreign root", fromC, f.a.Cert, StepUnknown, "neither the old root"},
		{"foreign root beside old", rrWithRoots(fromA, f.a, f.c), f.a.Cert, StepUnknown, "sha256:" + ca.Fingerprint(f.c.Cert)[:16]},
		{"intermediate from neither", rrWithRoots(fromC, f.a, f.b), f.a.Cert, StepUnknown, "chains to neither"},
		{"switched without trusting new (step 1 skipped)", rrWithRoots(fromB, f.a), f.a.Cert, StepUnknown, "step 1, trust both, was skipped"},
		{"old intermediate, old root dropped", rrWithRoots(fromA, f.b), f.a.Cert, StepUnknown, "signed by the old root, which its root-cert.pem does not hold"},
		{"no bundle", nil, f.a.Cert, StepUnknown, "no bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := StepOf(tc.b, tc.old, f.b.Cert)
			if got != tc.want {
				t.Errorf("step %v, want %v (err %v)", got, tc.want, err)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrInconsistent)):
				t.Errorf("error %v, want ErrInconsistent containing %q", err, tc.err)
			}
		})
	}
}

// TestSignedUnderThroughSubCA: an intermediate under a sub-CA (as a Vault PKI mount
// with an intermediate issuer makes) still chains to its root.
func TestSignedUnderThroughSubCA(t *testing.T) {
	f := newRRFixture(t)
	sub := rrSubCA(t, f.a, "Sub CA")
	inter := rrSubCA(t, sub, "Intermediate CA")
	b := &ca.Bundle{Cert: inter.Cert, Key: inter.Signer, Chain: []*x509.Certificate{inter.Cert, sub.Cert, f.a.Cert}, Roots: []*x509.Certificate{f.a.Cert, f.b.Cert}}
	if !b.SignedUnder(f.a.Cert) || b.SignedUnder(f.b.Cert) {
		t.Fatalf("SignedUnder(A)=%v SignedUnder(B)=%v, want true, false", b.SignedUnder(f.a.Cert), b.SignedUnder(f.b.Cert))
	}
	if s, err := StepOf(b, f.a.Cert, f.b.Cert); s != StepTrustBoth || err != nil {
		t.Fatalf("step %v, %v", s, err)
	}
	// Without the sub-CA in the chain, nothing links the intermediate to A.
	b.Chain = []*x509.Certificate{inter.Cert}
	if b.SignedUnder(f.a.Cert) {
		t.Fatal("chains to A without the sub-CA")
	}
}

func rrSubCA(t testing.TB, parent *ca.Root, cn string) *ca.Root {
	t.Helper()
	key, err := ca.GenerateKey(ca.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.Cert, key.Public(), parent.Signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca.Root{Cert: c, Signer: key}
}

func TestParseStep(t *testing.T) {
	for in, want := range map[string]Step{"1": StepTrustBoth, "trust-both": StepTrustBoth, "2": StepSwitched, "Switch": StepSwitched, "3": StepNewRoot, "drop": StepNewRoot} {
		if got, err := ParseStep(in); got != want || err != nil {
			t.Errorf("%q: %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"0", "4", "", "rotate"} {
		if _, err := ParseStep(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
	if StepTrustBoth.String() != "1 (trust-both)" || StepNewRoot.Action() != "drop" || StepUnknown.String() != "unknown" {
		t.Errorf("names: %s %s %s", StepTrustBoth, StepNewRoot.Action(), StepUnknown)
	}
}

// TestPlanRoot: where a mesh stands, what a run does, and when it refuses.
func TestPlanRoot(t *testing.T) {
	f := newRRFixture(t)
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	names := []string{"east", "north", "west"}
	bundles := map[string]map[Step]*ca.Bundle{}
	for _, n := range names {
		bundles[n] = rrSteps(t, f.a, f.b, n)
	}
	oldFP, newFP := ca.Fingerprint(f.a.Cert), ca.Fingerprint(f.b.Cert)
	rec := func(s Step, ago time.Duration) *Record {
		return &Record{Step: s, At: now.Add(-ago), OldRoot: oldFP, NewRoot: newFP, Clusters: names}
	}
	// mesh builds inputs: steps[i] for names[i]; recs[i] may be nil.
	mesh := func(steps []Step, recs ...*Record) []Input {
		in := make([]Input, len(steps))
		for i, s := range steps {
			in[i] = Input{Cluster: names[i], Bundle: bundles[names[i]][s]}
			if i < len(recs) {
				in[i].Record = recs[i]
			}
		}
		return in
	}
	day := 24 * time.Hour
	s := func(steps ...Step) []Step { return steps }

	for _, tc := range []struct {
		name        string
		in          []Input
		toStep      Step
		interval    time.Duration
		wantErr     error
		errHas      []string
		wantMesh    Step
		wantTarget  Step
		wantMoving  []string
		wantNext    time.Time
		unrecorded  []string
		wantDone    bool
		wantOldRoot bool
	}{
		{name: "start: all at 0 move to 1, no wait needed", in: mesh(s(0, 0, 0)), interval: day,
			wantMesh: 0, wantTarget: 1, wantMoving: names, wantOldRoot: true},
		{name: "all at 1 long enough: switch", in: mesh(s(1, 1, 1), rec(1, 25*time.Hour), rec(1, 30*time.Hour), rec(1, 24*time.Hour)), interval: day,
			wantMesh: 1, wantTarget: 2, wantMoving: names, wantOldRoot: true},
		{name: "all at 1, one too recent", in: mesh(s(1, 1, 1), rec(1, 25*time.Hour), rec(1, time.Hour), rec(1, 30*time.Hour)), interval: day,
			wantErr: ErrTooEarly, errHas: []string{"north reached step 1 (trust-both) at 2026-11-26T11:00:00Z", "allowed from 2026-11-27T11:00:00Z"},
			wantMesh: 1, wantTarget: 2, wantNext: now.Add(23 * time.Hour)},
		{name: "all at 1 without records: the wait starts now", in: mesh(s(1, 1, 1)), interval: day,
			wantErr: ErrTooEarly, errHas: []string{"east, north, west got to its step without meshpki"},
			wantMesh: 1, wantTarget: 2, wantNext: now.Add(day), unrecorded: names},
		{name: "all at 1 without records, no interval", in: mesh(s(1, 1, 1)), interval: 0,
			wantMesh: 1, wantTarget: 2, wantMoving: names, unrecorded: names},
		{name: "record of another step does not count", in: mesh(s(2, 2, 2), rec(1, 48*time.Hour), rec(2, 48*time.Hour), rec(2, 48*time.Hour)), interval: day,
			wantErr: ErrTooEarly, wantMesh: 2, wantTarget: 3, unrecorded: []string{"east"}, wantNext: now.Add(day)},
		{name: "record of another rotation does not count", in: mesh(s(1, 1, 1), &Record{Step: 1, At: now.Add(-48 * time.Hour), OldRoot: oldFP, NewRoot: "other"}, rec(1, 48*time.Hour), rec(1, 48*time.Hour)), interval: day,
			wantErr: ErrTooEarly, wantMesh: 1, wantTarget: 2, unrecorded: []string{"east"}},
		{name: "laggard at 1 completes step 2 without waiting for the others", in: mesh(s(2, 1, 2), rec(2, time.Minute), rec(1, 48*time.Hour), rec(2, time.Minute)), interval: day,
			wantMesh: 1, wantTarget: 2, wantMoving: []string{"north"}, wantOldRoot: true},
		{name: "laggard at 0 completes step 1", in: mesh(s(1, 0, 1), rec(1, time.Minute), nil, rec(1, time.Minute)), interval: day,
			wantMesh: 0, wantTarget: 1, wantMoving: []string{"north"}, wantOldRoot: true},
		{name: "drop asked while switch has not reached all", in: mesh(s(2, 1, 1), rec(2, 48*time.Hour), rec(1, 48*time.Hour), rec(1, 48*time.Hour)), toStep: 3, interval: day,
			wantErr: ErrBehind, errHas: []string{"step 3 (drop) needs every cluster at step 2 (switched) first", "behind: north (at step 1 (trust-both)), west (at step 1 (trust-both))"},
			wantMesh: 1},
		{name: "switch asked at step 0", in: mesh(s(0, 0, 0)), toStep: 2,
			wantErr: ErrBehind, errHas: []string{"behind: east (at step 0 (old-root)), north", "needs every cluster at step 1 (trust-both) first"}, wantMesh: 0},
		{name: "step asked already reached: no-op", in: mesh(s(2, 2, 2), rec(2, time.Minute), rec(2, time.Minute), rec(2, time.Minute)), toStep: 1, interval: day,
			wantMesh: 2, wantTarget: 2, wantOldRoot: true},
		{name: "rerun of the current step: no-op", in: mesh(s(1, 1, 1), rec(1, time.Minute), rec(1, time.Minute), rec(1, time.Minute)), toStep: 1, interval: day,
			wantMesh: 1, wantTarget: 1, wantOldRoot: true},
		{name: "step asked completes laggards", in: mesh(s(2, 1, 2), rec(2, time.Minute), rec(1, 48*time.Hour), rec(2, time.Minute)), toStep: 2, interval: day,
			wantMesh: 1, wantTarget: 2, wantMoving: []string{"north"}, wantOldRoot: true},
		{name: "two steps apart", in: mesh(s(0, 2, 1)),
			wantErr: ErrBehind, errHas: []string{"more than one step apart (step 0: east; step 1: west; step 2: north)"}, wantMesh: 0},
		{name: "done", in: mesh(s(3, 3, 3), rec(3, time.Hour), rec(3, time.Hour), rec(3, time.Hour)), interval: day,
			wantMesh: 3, wantTarget: 3, wantDone: true},
		{name: "done, only some clusters given", in: mesh(s(3, 3), rec(3, time.Hour), rec(3, time.Hour)), interval: day,
			wantMesh: 3, wantTarget: 3, wantDone: true},
		{name: "unreadable cluster", in: func() []Input {
			in := mesh(s(1, 1, 1))
			in[2].Bundle, in[2].Err = nil, errors.New("connection refused")
			return in
		}(), wantErr: ErrUnreadable, errHas: []string{"could not read west (connection refused)"}, wantMesh: StepUnknown},
		{name: "foreign cluster", in: func() []Input {
			in := mesh(s(0, 0, 0))
			in[1].Bundle = rrWithRoots(bundles["north"][StepOldRoot], f.a, f.c)
			return in
		}(), wantErr: ErrInconsistent, errHas: []string{"north: trusts sha256:"}, wantMesh: StepUnknown},
		{name: "clusters disagree on the old root", in: func() []Input {
			in := mesh(s(0, 0, 0))
			in[1].Bundle = rrMint(t, f.c, "north")
			return in
		}(), wantErr: ErrInconsistent, errHas: []string{"disagree on the old root", "by east, west", "by north"}, wantMesh: StepUnknown},
		{name: "a cluster of earlier steps is missing", in: func() []Input {
			r := rec(1, 48*time.Hour)
			r.Clusters = []string{"east", "north", "south", "west"}
			return mesh(s(1, 1, 1), r)
		}(), interval: day, wantErr: ErrIncomplete, errHas: []string{"covered south, which this run lacks"}, wantMesh: StepUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanRoot(tc.in, Options{NewRoot: f.b.Cert, ToStep: tc.toStep, MinStepInterval: tc.interval, Now: now})
			if tc.wantErr == nil && p.Err != nil || tc.wantErr != nil && !errors.Is(p.Err, tc.wantErr) {
				t.Fatalf("err %v, want %v", p.Err, tc.wantErr)
			}
			for _, h := range tc.errHas {
				if !strings.Contains(p.Err.Error(), h) {
					t.Errorf("error lacks %q:\n%v", h, p.Err)
				}
			}
			if p.Err != nil && p.Refused != p.Err.Error() {
				t.Errorf("Refused %q", p.Refused)
			}
			if p.MeshStep != tc.wantMesh {
				t.Errorf("mesh step %v, want %v", p.MeshStep, tc.wantMesh)
			}
			if tc.wantErr == nil || errors.Is(tc.wantErr, ErrTooEarly) {
				if p.Target != tc.wantTarget {
					t.Errorf("target %v, want %v", p.Target, tc.wantTarget)
				}
			}
			if got := p.Moving(); !slices.Equal(got, tc.wantMoving) {
				t.Errorf("moving %v, want %v", got, tc.wantMoving)
			}
			if p.Err != nil {
				for _, c := range p.Clusters {
					if c.Moves() {
						t.Errorf("refused plan moves %s", c.Cluster)
					}
				}
			}
			if !tc.wantNext.IsZero() && !p.NextAllowed.Equal(tc.wantNext) {
				t.Errorf("next allowed %v, want %v", p.NextAllowed, tc.wantNext)
			}
			if got := p.Unrecorded(); (tc.wantErr == nil || errors.Is(tc.wantErr, ErrTooEarly)) && !slices.Equal(got, tc.unrecorded) {
				t.Errorf("unrecorded %v, want %v", got, tc.unrecorded)
			}
			if p.Done() != tc.wantDone {
				t.Errorf("done %v", p.Done())
			}
			if tc.wantOldRoot && (p.OldRoot == nil || !p.OldRoot.Equal(f.a.Cert) || p.OldFingerprint != oldFP) {
				t.Errorf("old root %v %s, want A", p.OldRoot, p.OldFingerprint)
			}
			if p.NewFingerprint != newFP {
				t.Errorf("new fingerprint %s", p.NewFingerprint)
			}
		})
	}
}

func TestPlanRootRefusesSameRoot(t *testing.T) {
	f := newRRFixture(t)
	in := []Input{{Cluster: "east", Bundle: f.byStep[StepOldRoot]}}
	// The same root as "new": every cluster already is where it should be.
	if p := PlanRoot(in, Options{NewRoot: f.a.Cert}); p.Err != nil || !p.Done() {
		t.Fatalf("current root as the new one: %v, done %v", p.Err, p.Done())
	}
	// A root re-issued with the old root's key.
	tmpl := *f.a.Cert
	tmpl.SerialNumber = big.NewInt(42)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, f.a.Signer.Public(), f.a.Signer)
	if err != nil {
		t.Fatal(err)
	}
	same, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := PlanRoot(in, Options{NewRoot: same})
	if !errors.Is(p.Err, ErrSameRoot) {
		t.Fatalf("re-issued root: %v", p.Err)
	}
	if p := PlanRoot(in, Options{NewRoot: f.b.Cert, ToStep: 7}); p.Err == nil {
		t.Fatal("step 7 accepted")
	}
	if p := PlanRoot(nil, Options{NewRoot: f.b.Cert}); p.Err == nil {
		t.Fatal("no clusters accepted")
	}
}

// TestPlanRootOldRootFromRecords: when every cluster is done, the old root
// is only known from the records.
func TestPlanRootOldRootFromRecords(t *testing.T) {
	f := newRRFixture(t)
	in := []Input{{Cluster: "east", Bundle: f.byStep[StepNewRoot],
		Record: &Record{Step: 3, At: time.Now(), OldRoot: ca.Fingerprint(f.a.Cert), NewRoot: ca.Fingerprint(f.b.Cert)}}}
	p := PlanRoot(in, Options{NewRoot: f.b.Cert, MinStepInterval: time.Hour})
	if p.Err != nil || !p.Done() || p.OldRoot != nil || p.OldFingerprint != ca.Fingerprint(f.a.Cert) || len(p.Unrecorded()) != 0 {
		t.Fatalf("plan %+v, %v", p, p.Err)
	}
}

// rrCRLs is a ca-crl.pem with a CRL of both roots and of every step's intermediate.
func rrCRLs(t *testing.T, f *rrFixture) []byte {
	t.Helper()
	var crls []*x509.RevocationList
	add := func(c *x509.Certificate, k crypto.Signer) {
		crl, err := ca.SignCRL(c, k, nil, nil, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		crls = append(crls, crl)
	}
	add(f.a.Cert, f.a.Signer)
	add(f.b.Cert, f.b.Signer)
	for _, b := range f.byStep {
		add(b.Cert, b.Key)
	}
	return ca.EncodeCRLsPEM(crls...)
}

// TestFiles walks one cluster's files through the steps and checks
// what changes at each: only root-cert.pem at steps 1 and 3.
func TestFiles(t *testing.T) {
	f := newRRFixture(t)
	for _, format := range []ca.Format{ca.FormatIstio, ca.FormatTLS} {
		t.Run(string(format), func(t *testing.T) {
			start := f.byStep[StepOldRoot]
			files, err := start.Files(format)
			if err != nil {
				t.Fatal(err)
			}
			// A CRL set covering every CA of every step (istiod refuses ca-crl.pem
			// without one of each CA of the chain), carried unchanged.
			crlFile := rrCRLs(t, f)
			files[ca.CRLFile] = crlFile
			roots := ca.RootsFileName(format)
			check := func(files map[string][]byte, want Step) *ca.Bundle {
				t.Helper()
				b, _, err := ca.ParseBundle(files, ca.VerifyOptions{})
				if err != nil {
					t.Fatalf("step %v: %v", want, err)
				}
				if got, err := StepOf(b, f.a.Cert, f.b.Cert); got != want || err != nil {
					t.Fatalf("files for step %v are at step %v (%v)", want, got, err)
				}
				if string(files[ca.CRLFile]) != string(crlFile) {
					t.Fatalf("step %v dropped ca-crl.pem", want)
				}
				return b
			}
			check(files, StepOldRoot)

			s1, err := Files(files, StepTrustBoth, f.a.Cert, f.b.Cert, nil)
			if err != nil {
				t.Fatal(err)
			}
			check(s1, StepTrustBoth)
			if !bytes.Equal(s1[roots], ca.EncodeCertificatesPEM(f.a.Cert, f.b.Cert)) {
				t.Error("step 1 roots are not old + new")
			}
			rrOnlyChanged(t, files, s1, roots)

			switched := f.byStep[StepNewRoot] // its CA has a CRL in crlFile
			s2, err := Files(s1, StepSwitched, f.a.Cert, f.b.Cert, switched)
			if err != nil {
				t.Fatal(err)
			}
			b2 := check(s2, StepSwitched)
			if !b2.Cert.Equal(switched.Cert) || !bytes.Equal(s2[roots], s1[roots]) {
				t.Error("step 2: not the new intermediate, or roots file not byte-identical to step 1's")
			}
			if last := b2.Chain[len(b2.Chain)-1]; !last.Equal(f.b.Cert) {
				t.Error("step 2 chain does not end with the new root")
			}

			s3, err := Files(s2, StepNewRoot, nil, f.b.Cert, nil)
			if err != nil {
				t.Fatal(err)
			}
			check(s3, StepNewRoot)
			rrOnlyChanged(t, s2, s3, roots)
			if !bytes.Equal(s3[roots], ca.EncodeCertificatesPEM(f.b.Cert)) {
				t.Error("step 3 roots are not the new root's bytes as step 1 appended them")
			}

			if _, err := Files(s1, StepSwitched, f.a.Cert, f.b.Cert, rrMint(t, f.c, "east")); err == nil || !strings.Contains(err.Error(), "does not chain to the new root") {
				t.Errorf("intermediate from a foreign root: %v", err)
			}
			if _, err := Files(files, StepTrustBoth, nil, f.b.Cert, nil); err == nil {
				t.Error("step 1 without the old root")
			}
		})
	}
}

func rrOnlyChanged(t *testing.T, before, after map[string][]byte, name string) {
	t.Helper()
	for k := range after {
		if k != name && !bytes.Equal(before[k], after[k]) {
			t.Errorf("%s changed", k)
		}
	}
	if len(before) != len(after) {
		t.Errorf("files %d -> %d", len(before), len(after))
	}
}

func TestProfile(t *testing.T) {
	f := newRRFixture(t)
	p0 := ca.IntermediateProfile("east", "Example")
	p0.KeyType, p0.TTL, p0.DNSNames = ca.ECDSAP384, 90*24*time.Hour, []string{"istiod.istio-system.svc", "istiod.mesh.example"}
	cur, err := ca.Mint(context.Background(), ca.NewLocalIssuer(f.a), p0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Profile("east", cur.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if p.KeyType != ca.ECDSAP384 || p.TTL != p0.TTL || p.MaxPathLen != 0 || !slices.Equal(p.DNSNames, p0.DNSNames) || p.Subject.String() != cur.Cert.Subject.String() {
		t.Fatalf("profile %+v from %s", p, cur.Cert.Subject)
	}
	next, err := ca.Mint(context.Background(), ca.NewLocalIssuer(f.b), p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(next.Cert.RawSubject, cur.Cert.RawSubject) {
		t.Errorf("subject %s, want %s", next.Cert.Subject, cur.Cert.Subject)
	}
}

// TestStepsHandshake is the premise of the sequence: workloads of two
// clusters one step apart (or at the same step) complete mutual TLS; two or more
// steps apart they do not.
func TestStepsHandshake(t *testing.T) {
	f := newRRFixture(t)
	east, west := f.byStep, rrSteps(t, f.a, f.b, "west")
	ctx := context.Background()
	for s1 := StepOldRoot; s1 <= StepNewRoot; s1++ {
		for s2 := StepOldRoot; s2 <= StepNewRoot; s2++ {
			t.Run(fmt.Sprintf("east at %d, west at %d", s1, s2), func(t *testing.T) {
				srv, err := east[s1].IssueWorkload(ca.SPIFFEID("cluster.local", "default", "east"), time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				cli, err := west[s2].IssueWorkload(ca.SPIFFEID("cluster.local", "default", "west"), time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				err = ca.Handshake(ctx, srv, cli)
				apart := s1 - s2
				if apart < 0 {
					apart = -apart
				}
				if apart <= 1 && err != nil {
					t.Fatalf("one step apart, handshake failed: %v", err)
				}
				if apart > 1 && err == nil {
					t.Fatal("two steps apart, handshake succeeded")
				}
			})
		}
	}
}

// TestPlanRootBackwards: rolling back is rotating to the old root again.
// From step 1 the way back drops the new root; from step 2 it switches back first.
func TestPlanRootBackwards(t *testing.T) {
	f := newRRFixture(t)
	for _, tc := range []struct {
		at         Step // forward, from A to B
		wantStep   Step // backward, from B to A
		wantTarget Step
	}{
		{StepTrustBoth, StepSwitched, StepNewRoot},
		{StepSwitched, StepTrustBoth, StepSwitched},
		{StepNewRoot, StepOldRoot, StepTrustBoth},
	} {
		in := []Input{{Cluster: "east", Bundle: f.byStep[tc.at]}}
		p := PlanRoot(in, Options{NewRoot: f.a.Cert})
		if p.Err != nil || p.MeshStep != tc.wantStep || p.Target != tc.wantTarget || !p.OldRoot.Equal(f.b.Cert) {
			t.Errorf("back from step %v: at %v, target %v, err %v", tc.at, p.MeshStep, p.Target, p.Err)
		}
	}
}

// handMadeRoots is a roots file as people make it following Istio's guide, with the
// text `openssl x509 -text` prints before the block and no newline at the end.
func handMadeRoots(c *x509.Certificate) []byte {
	txt := "Certificate:\n    Data:\n        Version: 3 (0x2)\n        Subject: O = Example, CN = Root CA\n"
	return []byte(txt + strings.TrimSuffix(string(ca.EncodeCertificatesPEM(c)), "\n"))
}

// TestRootsFileEveryIstio walks a hand-made Secret (roots file with
// openssl's text, made as Istio's guide says) through the four steps and checks that
// every istiod from 1.20 takes each step on its hot reload: the roots file is only
// extended or trimmed.
func TestRootsFileEveryIstio(t *testing.T) {
	f := newRRFixture(t)
	start, err := f.byStep[StepOldRoot].Files(ca.FormatIstio)
	if err != nil {
		t.Fatal(err)
	}
	start[ca.RootCertFile] = handMadeRoots(f.a.Cert)
	s1, err := Files(start, StepTrustBoth, f.a.Cert, f.b.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Files(s1, StepSwitched, f.a.Cert, f.b.Cert, rrMint(t, f.b, "east"))
	if err != nil {
		t.Fatal(err)
	}
	s3, err := Files(s2, StepNewRoot, f.a.Cert, f.b.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	states := []map[string][]byte{start, s1, s2, s3}
	for i := 1; i < len(states); i++ {
		for _, rel := range []ca.IstioRelease{{Major: 1, Minor: 20}, {Major: 1, Minor: 29}, {Major: 1, Minor: 30}} {
			if v := ca.IstiodTakesRootsChange(rel, true, states[i-1][ca.RootCertFile], states[i][ca.RootCertFile]); !v.Accepted {
				t.Errorf("step %d on Istio %s: %s", i, rel, v.Reason)
			}
		}
		if _, _, err := ca.ParseBundle(states[i], ca.VerifyOptions{}); err != nil {
			t.Errorf("step %d: %v", i, err)
		}
	}
	if !bytes.HasPrefix(s1[ca.RootCertFile], start[ca.RootCertFile]) {
		t.Error("step 1 did not keep the hand-made bytes")
	}
	if !bytes.Equal(s2[ca.RootCertFile], s1[ca.RootCertFile]) {
		t.Error("step 2 changed the roots file")
	}
	// What meshpki used to write at step 2 (new + old, re-encoded) is what 1.20-1.29
	// refuse: the check above is not vacuous.
	if v := ca.IstiodTakesRootsChange(ca.IstioRelease{Major: 1, Minor: 20}, true, s1[ca.RootCertFile], ca.EncodeCertificatesPEM(f.b.Cert, f.a.Cert)); v.Accepted {
		t.Error("the byte rule accepted a reordered roots file")
	}
}

// TestPlanWaitsForIstiod: a cluster counts as at its step only when its istiod
// publishes that step's roots file; a cluster without istiod does not hold the run up.
func TestPlanWaitsForIstiod(t *testing.T) {
	f := newRRFixture(t)
	atStep1 := func(cluster string) *ca.Bundle {
		b := rrWithRoots(rrMint(t, f.a, cluster), f.a, f.b)
		b.RootsFile = ca.EncodeCertificatesPEM(f.a.Cert, f.b.Cert)
		return b
	}
	east, west := atStep1("east"), atStep1("west")
	onlyA := ca.EncodeCertificatesPEM(f.a.Cert)
	reordered := ca.EncodeCertificatesPEM(f.b.Cert, f.a.Cert)
	for _, tc := range []struct {
		name    string
		west    Input
		refused bool
		words   string
	}{
		{"both loaded", Input{Cluster: "west", Bundle: west, Published: west.RootsFile, PublishedKnown: true}, false, ""},
		{"west without istiod", Input{Cluster: "west", Bundle: west}, false, ""},
		{"west still on step 0's roots", Input{Cluster: "west", Bundle: west, Published: onlyA, PublishedKnown: true}, true, "not loaded in west"},
		{"west publishes the roots in other bytes", Input{Cluster: "west", Bundle: west, Published: reordered, PublishedKnown: true}, true, "in other bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := []Input{{Cluster: "east", Bundle: east, Published: east.RootsFile, PublishedKnown: true}, tc.west}
			p := PlanRoot(in, Options{NewRoot: f.b.Cert})
			if tc.refused {
				if !errors.Is(p.Err, ErrNotLoaded) || !strings.Contains(p.Err.Error(), tc.words) || len(p.Moving()) > 0 {
					t.Fatalf("plan: %v, moving %v; want refused with %q", p.Err, p.Moving(), tc.words)
				}
				if p := PlanRoot(in, Options{NewRoot: f.b.Cert, IgnoreIstiod: true}); p.Err != nil {
					t.Fatalf("IgnoreIstiod: %v", p.Err)
				}
				return
			}
			if p.Err != nil || p.Target != StepSwitched || len(p.Moving()) != 2 {
				t.Fatalf("plan: %v, target %v, moving %v", p.Err, p.Target, p.Moving())
			}
		})
	}
}
