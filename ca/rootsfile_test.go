package ca

import (
	"bytes"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
)

var (
	istio120 = IstioRelease{1, 20}
	istio130 = IstioRelease{1, 30}
	istio131 = IstioRelease{1, 31}
)

// handMadeRoots is a roots file as people make it following Istio's guide, with the
// text `openssl x509 -text` prints before the block and no newline at the end.
func handMadeRoots(c *x509.Certificate) []byte {
	txt := "Certificate:\n    Data:\n        Version: 3 (0x2)\n        Subject: O = Example, CN = Root CA\n"
	return []byte(txt + strings.TrimSuffix(string(EncodeCertificatesPEM(c)), "\n"))
}

func TestKeepRootsFile(t *testing.T) {
	f := newRRFixture(t)
	a, b, c := f.a.Cert, f.b.Cert, f.c.Cert
	hand := handMadeRoots(a)
	ab := KeepRootsFile(hand, []*x509.Certificate{a, b})
	for _, tc := range []struct {
		name    string
		current []byte
		want    []*x509.Certificate
		check   func([]byte) bool
	}{
		{"same set: byte for byte", hand, []*x509.Certificate{a}, func(out []byte) bool { return bytes.Equal(out, hand) }},
		{"same set, other order: byte for byte", ab, []*x509.Certificate{b, a}, func(out []byte) bool { return bytes.Equal(out, ab) }},
		{"extend: old bytes are a prefix", hand, []*x509.Certificate{a, b}, func(out []byte) bool {
			return bytes.HasPrefix(out, hand) && bytes.HasSuffix(out, EncodeCertificatesPEM(b))
		}},
		{"trim the first: the new root's bytes", ab, []*x509.Certificate{b}, func(out []byte) bool {
			return bytes.Equal(out, EncodeCertificatesPEM(b)) && bytes.Contains(ab, out)
		}},
		{"trim the last: the hand-made bytes", ab, []*x509.Certificate{a}, func(out []byte) bool { return bytes.HasPrefix(out, hand) && bytes.Contains(ab, out) }},
		{"disjoint: encoded afresh", hand, []*x509.Certificate{c}, func(out []byte) bool { return bytes.Equal(out, EncodeCertificatesPEM(c)) }},
		{"unreadable current: encoded afresh", []byte("garbage"), []*x509.Certificate{a}, func(out []byte) bool { return bytes.Equal(out, EncodeCertificatesPEM(a)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := KeepRootsFile(tc.current, tc.want)
			got, err := ParseCertificatesPEM(out)
			if err != nil || !SameCertificates(got, tc.want) {
				t.Fatalf("result holds %d certs (%v), want exactly the %d asked for", len(got), err, len(tc.want))
			}
			if !tc.check(out) {
				t.Fatalf("bytes not kept:\n%s", out)
			}
		})
	}
}

func TestIstiodTakesRootsChange(t *testing.T) {
	f := newRRFixture(t)
	a, b := f.a.Cert, f.b.Cert
	pa, pb := EncodeCertificatesPEM(a), EncodeCertificatesPEM(b)
	ab, ba := EncodeCertificatesPEM(a, b), EncodeCertificatesPEM(b, a)
	for _, tc := range []struct {
		name        string
		rel         IstioRelease
		multi       bool
		from, to    []byte
		want        bool
		reasonWords string
	}{
		{"unchanged, multiroot off", istio120, false, pa, pa, true, ""},
		{"append, 1.20", istio120, true, pa, ab, true, ""},
		{"reorder, 1.20: refused", istio120, true, ab, ba, false, "byte for byte"},
		{"reorder, 1.30: refused", istio130, true, ab, ba, false, "byte for byte"},
		{"reorder, 1.31: sets", istio131, true, ab, ba, true, ""},
		{"drop old, 1.20", istio120, true, ab, pb, true, ""},
		{"drop old after reorder, 1.20: refused", istio120, true, ba, append(pb[:len(pb):len(pb)], ' '), false, "byte for byte"},
		{"switch roots, 1.31: refused", istio131, true, pa, pb, false, "neither roots file"},
		{"append without multiroot: refused", istio131, false, pa, ab, false, "ISTIO_MULTIROOT_MESH"},
		{"1.18 needs a restart", IstioRelease{1, 18}, true, pa, ab, false, "restarted"},
		// Re-encoding a hand-made file drops its text and adds a final newline: refused.
		{"re-encoded hand-made file, 1.20: refused", istio120, true, handMadeRoots(a), pa, false, "byte for byte"},
		{"re-encoded hand-made file, 1.31", istio131, true, handMadeRoots(a), pa, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := IstiodTakesRootsChange(tc.rel, tc.multi, tc.from, tc.to)
			if v.Accepted != tc.want || !strings.Contains(v.Reason, tc.reasonWords) {
				t.Fatalf("got %+v, want accepted=%v with %q", v, tc.want, tc.reasonWords)
			}
		})
	}
}

// TestRootRotationRootsFileEveryIstio walks a hand-made Secret (roots file with
// openssl's text, made as Istio's guide says) through the four steps and checks that
// every istiod from 1.20 takes each step on its hot reload: the roots file is only
// extended or trimmed.
func TestRootRotationRootsFileEveryIstio(t *testing.T) {
	f := newRRFixture(t)
	start, err := f.byStep[StepOldRoot].Files(FormatIstio)
	if err != nil {
		t.Fatal(err)
	}
	start[RootCertFile] = handMadeRoots(f.a.Cert)
	s1, err := RootRotationFiles(start, StepTrustBoth, f.a.Cert, f.b.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := RootRotationFiles(s1, StepSwitched, f.a.Cert, f.b.Cert, rrMint(t, f.b, "east"))
	if err != nil {
		t.Fatal(err)
	}
	s3, err := RootRotationFiles(s2, StepNewRoot, f.a.Cert, f.b.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	states := []map[string][]byte{start, s1, s2, s3}
	for i := 1; i < len(states); i++ {
		for _, rel := range []IstioRelease{istio120, istio130, istio131} {
			if v := IstiodTakesRootsChange(rel, true, states[i-1][RootCertFile], states[i][RootCertFile]); !v.Accepted {
				t.Errorf("step %d on Istio %s: %s", i, rel, v.Reason)
			}
		}
		if _, _, err := ParseBundle(states[i], VerifyOptions{}); err != nil {
			t.Errorf("step %d: %v", i, err)
		}
	}
	if !bytes.HasPrefix(s1[RootCertFile], start[RootCertFile]) {
		t.Error("step 1 did not keep the hand-made bytes")
	}
	if !bytes.Equal(s2[RootCertFile], s1[RootCertFile]) {
		t.Error("step 2 changed the roots file")
	}
	// What meshpki used to write at step 2 (new + old, re-encoded) is what 1.20-1.30
	// refuse: the check above is not vacuous.
	if v := IstiodTakesRootsChange(istio120, true, s1[RootCertFile], EncodeCertificatesPEM(f.b.Cert, f.a.Cert)); v.Accepted {
		t.Error("the byte rule accepted a reordered roots file")
	}
}

// TestPlanWaitsForIstiod: a cluster counts as at its step only when its istiod
// publishes that step's roots file; a cluster without istiod does not hold the run up.
func TestPlanWaitsForIstiod(t *testing.T) {
	f := newRRFixture(t)
	atStep1 := func(cluster string) *Bundle {
		b := rrWithRoots(rrMint(t, f.a, cluster), f.a, f.b)
		b.RootsFile = EncodeCertificatesPEM(f.a.Cert, f.b.Cert)
		return b
	}
	east, west := atStep1("east"), atStep1("west")
	onlyA := EncodeCertificatesPEM(f.a.Cert)
	reordered := EncodeCertificatesPEM(f.b.Cert, f.a.Cert)
	for _, tc := range []struct {
		name    string
		west    RotationInput
		refused bool
		words   string
	}{
		{"both loaded", RotationInput{Cluster: "west", Bundle: west, Published: west.RootsFile, PublishedKnown: true}, false, ""},
		{"west without istiod", RotationInput{Cluster: "west", Bundle: west}, false, ""},
		{"west still on step 0's roots", RotationInput{Cluster: "west", Bundle: west, Published: onlyA, PublishedKnown: true}, true, "not loaded in west"},
		{"west publishes the roots in other bytes", RotationInput{Cluster: "west", Bundle: west, Published: reordered, PublishedKnown: true}, true, "in other bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := []RotationInput{{Cluster: "east", Bundle: east, Published: east.RootsFile, PublishedKnown: true}, tc.west}
			p := PlanRootRotation(in, RotationOptions{NewRoot: f.b.Cert})
			if tc.refused {
				if !errors.Is(p.Err, ErrRotationNotLoaded) || !strings.Contains(p.Err.Error(), tc.words) || len(p.Moving()) > 0 {
					t.Fatalf("plan: %v, moving %v; want refused with %q", p.Err, p.Moving(), tc.words)
				}
				if p := PlanRootRotation(in, RotationOptions{NewRoot: f.b.Cert, IgnoreIstiod: true}); p.Err != nil {
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
