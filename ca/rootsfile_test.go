package ca

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

var (
	istio120 = IstioRelease{1, 20}
	istio129 = IstioRelease{1, 29}
	istio130 = IstioRelease{1, 30}
	istio131 = IstioRelease{1, 31}
)

// handMadeRoots is a roots file as people make it following Istio's guide, with the
// text `openssl x509 -text` prints before the block and no newline at the end.
func handMadeRoots(c *x509.Certificate) []byte {
	txt := "Certificate:\n    Data:\n        Version: 3 (0x2)\n        Subject: O = Example, CN = Root CA\n"
	return []byte(txt + strings.TrimSuffix(string(EncodeCertificatesPEM(c)), "\n"))
}

// rootsFixture is three roots made with the same profile (so the same subject).
type rootsFixture struct{ a, b, c *Root }

func newRootsFixture(t testing.TB) *rootsFixture {
	t.Helper()
	var r [3]*Root
	for i := range r {
		root, _, err := CreateRoot(DefaultRootProfile("Istio"), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		r[i] = root
	}
	return &rootsFixture{a: r[0], b: r[1], c: r[2]}
}

func TestKeepRootsFile(t *testing.T) {
	f := newRootsFixture(t)
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

func TestRootsChangeTakenByIstiod(t *testing.T) {
	f := newRootsFixture(t)
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
		{"reorder, 1.29: refused", istio129, true, ab, ba, false, "byte for byte"},
		{"reorder, 1.30 (istio#59909, cherry-picked into 1.30.0 as #59953): sets", istio130, true, ab, ba, true, ""},
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
