package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// Workload is a throwaway workload identity issued from a bundle, as istiod issues
// them: a SPIFFE URI SAN, serverAuth and clientAuth, the bundle's chain attached,
// and the bundle's roots trusted.
type Workload struct {
	ID    *url.URL
	Cert  tls.Certificate
	Roots *x509.CertPool
	// CRLs, when not nil, are enforced on peers as Envoy does with a validation
	// context CRL (the cluster's ca-crl.pem, published as istio-ca-crl): every CA
	// of the peer's chain needs a current CRL, and none may list the next (see
	// CheckChainCRLs).
	CRLs []*x509.RevocationList

	rootSet string // the roots' fingerprints, for CheckMeshMTLS's trust sets
}

// SPIFFEID is the identity istiod gives a service account.
func SPIFFEID(trustDomain, namespace, serviceAccount string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: trustDomain, Path: "/ns/" + namespace + "/sa/" + serviceAccount}
}

// IssueWorkload signs a short-lived ECDSA P-256 workload certificate for id with the
// bundle's intermediate, valid from now: IssueWorkloadAt at time.Now().
func (b *Bundle) IssueWorkload(id *url.URL, ttl time.Duration) (*Workload, error) {
	return b.IssueWorkloadAt(id, ttl, time.Now())
}

// IssueWorkloadAt is IssueWorkload at time now: the certificate is valid from a
// minute before now for ttl, capped at the intermediate's not-after. A bundle with
// CRLFile gives the workload those CRLs to enforce on its peers.
func (b *Bundle) IssueWorkloadAt(id *url.URL, ttl time.Duration, now time.Time) (*Workload, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(b.Cert.NotAfter) { // istiod caps workload certs the same way
		notAfter = b.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.Cert, key.Public(), b.Key)
	if err != nil {
		return nil, fmt.Errorf("sign workload certificate: %w", err)
	}
	chain := [][]byte{der}
	for _, c := range b.Chain {
		chain = append(chain, c.Raw)
	}
	roots := x509.NewCertPool()
	for _, r := range b.Roots {
		roots.AddCert(r)
	}
	w := &Workload{ID: id, Cert: tls.Certificate{Certificate: chain, PrivateKey: key}, Roots: roots, rootSet: rootSetKey(b.Roots)}
	if b.CRLFile != nil {
		// The bundle's ca-crl.pem is what its cluster's Envoys enforce.
		if w.CRLs, err = ParseCRLsPEM(b.CRLFile); err != nil {
			return nil, fmt.Errorf("%s: %w", CRLFile, err)
		}
	}
	return w, nil
}

// verifyPeer checks a peer's chain against roots (and crls, when not nil), as Envoy
// does with Istio's validation context: workloadChain.accepts on the chain sent.
func verifyPeer(roots *x509.CertPool, crls []*x509.RevocationList, usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("peer sent no certificate")
		}
		wc := &workloadChain{leaf: cs.PeerCertificates[0], inters: x509.NewCertPool()}
		for _, c := range cs.PeerCertificates[1:] {
			wc.inters.AddCert(c)
		}
		return wc.accepts(roots, crls, usage)
	}
}

// Handshake runs a TLS 1.3 mutual-TLS handshake over loopback TCP between server
// and client, each verifying the other against its own roots. It returns the
// client's error if the client side failed, else the server's.
func Handshake(ctx context.Context, server, client *Workload) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = ln.(*net.TCPListener).SetDeadline(d)
	}
	srvErr := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer conn.Close()
		tc := tls.Server(conn, &tls.Config{
			MinVersion:       tls.VersionTLS13,
			Certificates:     []tls.Certificate{server.Cert},
			ClientAuth:       tls.RequireAnyClientCert,
			VerifyConnection: verifyPeer(server.Roots, server.CRLs, x509.ExtKeyUsageClientAuth),
		})
		err = tc.HandshakeContext(ctx)
		if err == nil {
			// Read the client's byte so both sides have finished verifying.
			_, err = tc.Read(make([]byte, 1))
		}
		srvErr <- err
	}()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	defer conn.Close()
	tc := tls.Client(conn, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{client.Cert},
		InsecureSkipVerify: true, // replaced by VerifyConnection: SPIFFE IDs carry no host name
		VerifyConnection:   verifyPeer(client.Roots, client.CRLs, x509.ExtKeyUsageServerAuth),
	})
	cerr := tc.HandshakeContext(ctx)
	if cerr == nil {
		_, cerr = tc.Write([]byte{1})
	}
	conn.Close()
	serr := <-srvErr
	if cerr != nil {
		return fmt.Errorf("client %s: %w", client.ID, cerr)
	}
	if serr != nil {
		return fmt.Errorf("server %s: %w", server.ID, serr)
	}
	return nil
}
