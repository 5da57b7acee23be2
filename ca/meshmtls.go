package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// MeshMTLS is the mutual-TLS verdict for every ordered pair of workloads of a mesh,
// worked out per class instead of per pair: whether workload s (server) and c
// (client) accept each other depends only on whether s's chain verifies against
// c's roots for serverAuth and c's chain against s's roots for clientAuth. So each
// workload's chain is checked once against each distinct trust set, workloads that
// behave the same against every trust set (and trust the same roots) form one
// class, and one real handshake per ordered pair of classes, between
// representatives, confirms the prediction. For n workloads with k distinct trust
// sets that is 2·n·k chain checks and a handful of handshakes, not n² handshakes.
type MeshMTLS struct {
	// Classes lists the workloads (by index) of each class, in order of first member.
	Classes [][]int
	// Results holds one entry per ordered pair of classes that stands for at least
	// one pair of distinct workloads (or the lone workload with itself).
	Results []ClassHandshake

	class []int // workload index -> class index
	index map[[2]int]int
}

// ClassHandshake is the verdict for every server of one class with every client of
// another (or the same) class.
type ClassHandshake struct {
	ServerClass, ClientClass int
	// Server and Client are the workloads that ran the real handshake.
	Server, Client int
	// Pairs is how many ordered pairs of workloads this verdict stands for.
	Pairs int
	// Err is nil when they accept each other.
	Err error
}

// workloadChain is a workload's leaf and intermediates, parsed once.
type workloadChain struct {
	leaf   *x509.Certificate
	inters *x509.CertPool
}

func (w *Workload) chain() (*workloadChain, error) {
	if len(w.Cert.Certificate) == 0 {
		return nil, errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(w.Cert.Certificate[0])
	if err != nil {
		return nil, err
	}
	inters := x509.NewCertPool()
	for _, der := range w.Cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		inters.AddCert(c)
	}
	return &workloadChain{leaf: leaf, inters: inters}, nil
}

// accepts is what a peer checks of this chain during a handshake (verifyPeer): it
// verifies to roots for usage, passes crls as Envoy checks them (when not nil), and
// names a SPIFFE identity.
func (wc *workloadChain) accepts(roots *x509.CertPool, crls []*x509.RevocationList, usage x509.ExtKeyUsage) error {
	chains, err := wc.leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: wc.inters, KeyUsages: []x509.ExtKeyUsage{usage}})
	if err != nil {
		return err
	}
	if crls != nil {
		if err := CheckChainCRLs(chains[0], crls, time.Now()); err != nil {
			return fmt.Errorf("peer's chain fails the CRL check: %w", err)
		}
	}
	if len(wc.leaf.URIs) != 1 || wc.leaf.URIs[0].Scheme != "spiffe" {
		return errors.New("peer certificate has no SPIFFE identity")
	}
	return nil
}

// CheckMeshMTLS works out the mutual-TLS verdict of every ordered pair of distinct
// workloads (of the lone workload with itself when there is one), running real
// handshakes only between representatives of each ordered pair of classes.
func CheckMeshMTLS(ctx context.Context, ws []*Workload) (*MeshMTLS, error) {
	n := len(ws)
	m := &MeshMTLS{class: make([]int, n), index: map[[2]int]int{}}
	if n == 0 {
		return m, nil
	}
	// Distinct trust sets, and each workload's.
	var trustPools []*x509.CertPool
	var trustCRLs [][]*x509.RevocationList
	trustOf := make([]int, n)
	seenTrust := map[string]int{}
	for i, w := range ws {
		key := w.rootSet
		if key == "" { // not from IssueWorkload: its roots are unknown, so its own set
			key = fmt.Sprintf("#%d", i)
		}
		if w.CRLs != nil {
			key += "|crl:" + string(EncodeCRLsPEM(w.CRLs...))
		}
		k, ok := seenTrust[key]
		if !ok {
			k = len(trustPools)
			seenTrust[key] = k
			trustPools = append(trustPools, w.Roots)
			trustCRLs = append(trustCRLs, w.CRLs)
		}
		trustOf[i] = k
	}
	// Each chain against each trust set, both ways; the signature is the class.
	seenClass := map[string]int{}
	for i, w := range ws {
		if err := ctx.Err(); err != nil {
			return nil, context.Cause(ctx)
		}
		wc, err := w.chain()
		if err != nil {
			return nil, fmt.Errorf("workload %d: %w", i, err)
		}
		var sig strings.Builder
		fmt.Fprintf(&sig, "%d:", trustOf[i])
		for k, pool := range trustPools {
			s, c := wc.accepts(pool, trustCRLs[k], x509.ExtKeyUsageServerAuth) == nil, wc.accepts(pool, trustCRLs[k], x509.ExtKeyUsageClientAuth) == nil
			fmt.Fprintf(&sig, "%c%c", "-S"[b2i(s)], "-C"[b2i(c)])
		}
		k, ok := seenClass[sig.String()]
		if !ok {
			k = len(m.Classes)
			seenClass[sig.String()] = k
			m.Classes = append(m.Classes, nil)
		}
		m.class[i] = k
		m.Classes[k] = append(m.Classes[k], i)
	}
	// One real handshake per ordered pair of classes.
	for a, sa := range m.Classes {
		for b, sb := range m.Classes {
			server, client, pairs := sa[0], sb[0], len(sa)*len(sb)
			if a == b {
				switch {
				case n == 1:
					// The lone workload with itself, as the all-pairs check did.
				case len(sa) == 1:
					continue // no pair of distinct workloads in this class
				default:
					client, pairs = sa[1], pairs-len(sa)
				}
			}
			if err := ctx.Err(); err != nil {
				return nil, context.Cause(ctx)
			}
			m.index[[2]int{a, b}] = len(m.Results)
			m.Results = append(m.Results, ClassHandshake{ServerClass: a, ClientClass: b, Server: server, Client: client,
				Pairs: pairs, Err: Handshake(ctx, ws[server], ws[client])})
		}
	}
	return m, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Verdict is the result for server workload s and client workload c (s != c unless
// the mesh has one workload): nil when they accept each other.
func (m *MeshMTLS) Verdict(s, c int) error {
	i, ok := m.index[[2]int{m.class[s], m.class[c]}]
	if !ok {
		return fmt.Errorf("no verdict for workloads %d and %d", s, c)
	}
	return m.Results[i].Err
}

// rootSetKey identifies a set of roots regardless of order or repeats.
func rootSetKey(roots []*x509.Certificate) string {
	fps := make([]string, 0, len(roots))
	for _, r := range roots {
		fps = append(fps, Fingerprint(r))
	}
	slices.Sort(fps)
	return strings.Join(slices.Compact(fps), ",")
}
