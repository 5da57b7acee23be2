package rotation

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
)

// istiodSelfSigned makes a CA as istiod makes its own when it starts without
// cacerts (security/pkg/pki/ca/ca.go NewSelfSignedIstioCAOptions,
// security/pkg/pki/util/generate_cert.go): RSA 2048, O=<trust domain>, no CN and
// no SAN, keyCertSign only, ten years, its own root. The bundle is that CA as
// istiod holds it.
func istiodSelfSigned(t testing.TB, ttl time.Duration) *ca.Bundle {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: now, NotAfter: now.Add(ttl), KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca.Bundle{Cert: cert, Key: key, Chain: []*x509.Certificate{cert}, Roots: []*x509.Certificate{cert}, RootsFile: ca.EncodeCertificatesPEM(cert)}
}

// convMesh is a mesh the test converges: each cluster's bundle, and the Input the
// planner gets (self-signed ones without cacerts).
type convMesh struct {
	names   []string
	bundles map[string]*ca.Bundle
	self    map[string]bool
	recs    map[string]*Record
}

func (m *convMesh) inputs() []Input {
	var in []Input
	for _, n := range m.names {
		b := m.bundles[n]
		in = append(in, Input{Cluster: n, Bundle: b, SelfSigned: m.self[n], Record: m.recs[n], Published: b.RootsFile, PublishedKnown: true})
	}
	return in
}

// apply makes the plan's moves as package mesh does: the files of each moving
// cluster's step (FilesIn; a self-signed cluster's from its CA as istiod holds
// it), a new intermediate from issuer at step 2; and records the step.
func (m *convMesh) apply(t *testing.T, p *Plan, issuer ca.Issuer, now time.Time) {
	t.Helper()
	for _, c := range p.Clusters {
		if !c.Moves() {
			continue
		}
		cur := m.bundles[c.Cluster]
		files, err := cur.Files(ca.FormatIstio)
		if err != nil {
			t.Fatal(err)
		}
		var switched *ca.Bundle
		if c.Next == StepSwitched {
			prof, err := Profile(c.Cluster, cur.Cert)
			if err != nil {
				t.Fatal(err)
			}
			if switched, err = ca.Mint(context.Background(), issuer, prof); err != nil {
				t.Fatal(err)
			}
		}
		next, err := FilesIn(files, c.Next, p.Roots, p.NewRoot, switched)
		if err != nil {
			t.Fatalf("%s to step %d: %v", c.Cluster, c.Next, err)
		}
		nb, rep, err := ca.ParseBundle(next, ca.VerifyOptions{AllowRootKey: true})
		if err != nil || !rep.OK() {
			t.Fatalf("%s: step %d bundle: %v %v", c.Cluster, c.Next, err, rep.Err())
		}
		// Every istiod from 1.20 takes the change on its hot reload, but for an
		// adopted one, which istiod reads at its restart.
		if !m.self[c.Cluster] {
			for _, rel := range []ca.IstioRelease{{Major: 1, Minor: 20}, {Major: 1, Minor: 30}} {
				if d := ca.IstiodTakesRootsChange(rel, true, files[ca.RootCertFile], next[ca.RootCertFile]); !d.Accepted {
					t.Fatalf("%s: istiod %v refuses the roots file of step %d: %v", c.Cluster, rel, c.Next, d)
				}
			}
		}
		m.bundles[c.Cluster], m.self[c.Cluster] = nb, false
		got, err := stepIn(nb, p.Roots, p.NewRoot, true)
		if err != nil || got < c.Next {
			t.Fatalf("%s: the bundle made for step %d is at step %v (%v)", c.Cluster, c.Next, got, err)
		}
		by := Step(0)
		if got != c.Next {
			by = c.Next
		}
		m.recs[c.Cluster] = &Record{Step: got, At: now, NewRoot: p.NewFingerprint, Clusters: m.names, By: by}
	}
}

// mtls reports whether workloads of x (as bundle bx makes them) and of y (by) complete
// mutual TLS.
func mtls(t *testing.T, bx, by *ca.Bundle) error {
	t.Helper()
	wx, err := bx.IssueWorkload(ca.SPIFFEID("cluster.local", "default", "x"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wy, err := by.IssueWorkload(ca.SPIFFEID("cluster.local", "default", "y"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca.Handshake(context.Background(), wx, wy)
}

// TestConvergeHandshakes walks meshes on different roots (another mesh's root,
// istiod's own self-signed CA, the target already) through the convergence, and
// checks at every step, for every pair of clusters: a workload with the new trust
// bundle completes mTLS with one issued at the step before (in every cluster; across
// clusters wherever they talked before, and from step 1 on everywhere), and at the
// end every cluster trusts and signs under the target only.
func TestConvergeHandshakes(t *testing.T) {
	a, b, n := rrNewRoot(t), rrNewRoot(t), rrNewRoot(t)
	for _, tc := range []struct {
		name   string
		target *ca.Root
		make   func(m *convMesh)
	}{
		{"two meshes merged onto A", a, func(m *convMesh) {
			m.bundles["a1"], m.bundles["a2"] = rrMint(t, a, "a1"), rrMint(t, a, "a2")
			m.bundles["b1"], m.bundles["b2"] = rrMint(t, b, "b1"), rrMint(t, b, "b2")
		}},
		{"a self-signed cluster adopted beside the shared root", n, func(m *convMesh) {
			m.bundles["shared"] = rrMint(t, n, "shared")
			m.bundles["own"], m.self["own"] = istiodSelfSigned(t, 10*365*24*time.Hour), true
		}},
		{"a mix onto a new root", n, func(m *convMesh) {
			m.bundles["on-a"] = rrMint(t, a, "on-a")
			m.bundles["on-b"] = rrMint(t, b, "on-b")
			m.bundles["own"], m.self["own"] = istiodSelfSigned(t, 10*365*24*time.Hour), true
			m.bundles["ahead"] = rrWithRoots(rrMint(t, n, "ahead"), n, a) // trusts some, signs under N
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &convMesh{bundles: map[string]*ca.Bundle{}, self: map[string]bool{}, recs: map[string]*Record{}}
			tc.make(m)
			for name := range m.bundles {
				m.names = append(m.names, name)
			}
			now := time.Now()
			for round := 1; ; round++ {
				if round > 4 {
					t.Fatal("no convergence in 4 steps")
				}
				p := PlanRoot(m.inputs(), Options{NewRoot: tc.target.Cert, Adopt: true, MinStepInterval: time.Hour, Now: now})
				if p.Done() {
					break
				}
				if p.Err != nil {
					t.Fatalf("round %d: %v", round, p.Err)
				}
				before := map[string]*ca.Bundle{}
				for k, v := range m.bundles {
					before[k] = v
				}
				m.apply(t, p, ca.NewLocalIssuer(tc.target), now)
				for _, x := range m.names {
					for _, y := range m.names {
						talked := x == y || mtls(t, before[x], before[y]) == nil
						if err := mtls(t, m.bundles[x], before[y]); (talked || p.Target >= StepSwitched) && err != nil {
							t.Errorf("step %d: %s (new) with %s (before): %v", p.Target, x, y, err)
						}
						if p.Target >= StepTrustBoth && mtls(t, m.bundles[x], m.bundles[y]) != nil {
							t.Errorf("step %d: %s and %s do not talk", p.Target, x, y)
						}
					}
				}
				now = now.Add(2 * time.Hour)
			}
			for _, x := range m.names {
				bx := m.bundles[x]
				if len(bx.Roots) != 1 || !bx.Roots[0].Equal(tc.target.Cert) || !bx.SignedUnder(tc.target.Cert) || ca.IsSelfSigned(bx.Cert) {
					t.Errorf("%s at the end: trusts %s, signs under the target %v", x, fingerprints(bx.Roots), bx.SignedUnder(tc.target.Cert))
				}
			}
		})
	}
}

// TestConvergeRefusals: what a convergence refuses before it changes anything.
func TestConvergeRefusals(t *testing.T) {
	a, n := rrNewRoot(t), rrNewRoot(t)
	own := istiodSelfSigned(t, 10*365*24*time.Hour)
	in := func(bs map[string]*ca.Bundle, self ...string) []Input {
		var out []Input
		for _, name := range []string{"east", "west"} {
			if b := bs[name]; b != nil {
				out = append(out, Input{Cluster: name, Bundle: b, SelfSigned: strings.Contains(strings.Join(self, ","), name), Published: b.RootsFile, PublishedKnown: true})
			}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		in     []Input
		opts   Options
		want   error
		errHas string
	}{
		{"without Adopt, a self-signed cluster", in(map[string]*ca.Bundle{"east": rrMint(t, n, "east"), "west": own}, "west"),
			Options{NewRoot: n.Cert}, ErrInconsistent, "west signs with istiod's own self-signed CA"},
		{"without Adopt, two roots", in(map[string]*ca.Bundle{"east": rrMint(t, a, "east"), "west": rrMint(t, rrNewRoot(t), "west")}),
			Options{NewRoot: n.Cert}, ErrInconsistent, "disagree on the old root"},
		{"the target is a cluster's own CA", in(map[string]*ca.Bundle{"east": rrMint(t, a, "east"), "west": own}, "west"),
			Options{NewRoot: own.Cert, Adopt: true}, ErrTargetInMesh, "is the CA of cluster west itself"},
		{"a self-signed CA expiring before the end", in(map[string]*ca.Bundle{"east": rrMint(t, n, "east"), "west": istiodSelfSigned(t, 30*time.Hour)}, "west"),
			Options{NewRoot: n.Cert, Adopt: true, MinStepInterval: 24 * time.Hour}, ErrExpiresTooSoon, "cluster west signs with a self-signed CA"},
		{"an istiod that has not loaded its roots", func() []Input {
			i := in(map[string]*ca.Bundle{"east": rrMint(t, a, "east"), "west": own}, "west")
			i[0].Published = ca.EncodeCertificatesPEM(n.Cert)
			return i
		}(), Options{NewRoot: n.Cert, Adopt: true}, ErrNotLoaded, "east (istiod publishes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanRoot(tc.in, tc.opts)
			if !errors.Is(p.Err, tc.want) || !strings.Contains(fmt.Sprint(p.Err), tc.errHas) {
				t.Fatalf("got %v, want %v with %q", p.Err, tc.want, tc.errHas)
			}
			if len(p.Moving()) != 0 {
				t.Fatalf("a refused plan moves %v", p.Moving())
			}
		})
	}
}
