package mesh

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

// CRLRunOptions controls CRLSync and Revoke.
type CRLRunOptions struct {
	// Namespace holds cacerts; empty means k8s.DefaultNamespace.
	Namespace string
	// Concurrency bounds the clusters worked on at once (see k8s.Each).
	Concurrency int
	// Lock is the Lease taken around each cluster's write.
	Lock *k8s.LeaseOptions
	// DryRun signs and checks everything and writes nothing.
	DryRun bool
	// Progress, if set, is called as each cluster's write finishes.
	Progress func(*CRLSyncResult)
}

// RevokedCA is one revocation a run made.
type RevokedCA struct {
	// Cluster is the cluster whose CA it is, "" when revoked by serial.
	Cluster string `json:"cluster,omitempty"`
	Serial  string `json:"serial"`
	Reason  string `json:"reason"`
	// Already: the source's CRL listed it before this run (a run interrupted
	// before every cluster got it): this run only spread it.
	Already bool `json:"alreadyRevoked,omitempty"`
}

// CRLInfo describes a CRL, never its signer's key.
type CRLInfo struct {
	// CA is the CRL's issuer.
	CA         string    `json:"ca"`
	Number     string    `json:"number"`
	NextUpdate time.Time `json:"nextUpdate"`
	Revoked    []string  `json:"revokedSerials"`
	// Signed tells that this run signed it.
	Signed bool `json:"signed"`
}

// DescribeCRL is crl as a CRLInfo.
func DescribeCRL(crl *x509.RevocationList, signed bool) CRLInfo {
	info := CRLInfo{CA: crl.Issuer.String(), NextUpdate: crl.NextUpdate.UTC(), Signed: signed, Revoked: []string{}}
	if crl.Number != nil {
		info.Number = crl.Number.Text(16)
	}
	for _, en := range crl.RevokedCertificateEntries {
		info.Revoked = append(info.Revoked, ca.FormatSerialNumber(en.SerialNumber))
	}
	return info
}

// CRLReport is what CRLSync or Revoke did.
type CRLReport struct {
	DryRun bool `json:"dryRun,omitempty"`
	// Revoked lists the serials this run revoked.
	Revoked []RevokedCA `json:"revoked,omitempty"`
	// RootCRL describes the CRL in force of the CA that signs cluster CAs (the
	// root, or an issuing CA).
	RootCRL CRLInfo `json:"rootCRL"`
	// Upstream describes the CRLs passed on for the CAs above an issuing CA.
	Upstream []CRLInfo        `json:"upstreamCRLs,omitempty"`
	Clusters []*CRLSyncResult `json:"clusters"`
	// Err is why the run, or part of it, failed; nil when Verdict is OK. When
	// Clusters is empty, the run stopped before any cluster was read.
	Err error `json:"-"`
}

// Verdict is OK when every cluster holds the mesh CRL set (or was left alone as
// revoked).
func (r *CRLReport) Verdict() Verdict {
	if r.Err != nil {
		return Failed
	}
	return OK
}

// CRLSync signs the source's CRL when it is missing or due, takes the CRLs of the
// CAs above an issuing CA (Source.Upstream, checked), and gives every cluster one
// current CRL of every CA of the mesh (SyncCRLs).
func CRLSync(ctx context.Context, clusters []*k8s.Cluster, src *Source, opts CRLRunOptions) *CRLReport {
	return crlRun(ctx, clusters, src, opts, nil, &CRLReport{})
}

func crlRun(ctx context.Context, clusters []*k8s.Cluster, src *Source, opts CRLRunOptions, revoke []x509.RevocationListEntry, rep *CRLReport) *CRLReport {
	anchors, changed, err := src.AnchorCRLs(ctx, revoke, opts.DryRun)
	if err != nil {
		rep.Err = err
		return rep
	}
	rep.DryRun = opts.DryRun
	rep.RootCRL = DescribeCRL(anchors[0], changed)
	for _, crl := range anchors[1:] {
		rep.Upstream = append(rep.Upstream, DescribeCRL(crl, false))
	}
	rep.Clusters, rep.Err = SyncCRLs(ctx, clusters, CRLSyncOptions{
		Namespace: opts.Namespace, AnchorCRLs: anchors, TTL: src.CRLTTL, Refresh: src.CRLRefresh,
		Concurrency: opts.Concurrency, Lock: opts.Lock, DryRun: opts.DryRun, Progress: opts.Progress,
	})
	return rep
}

// RevokeOptions controls Revoke.
type RevokeOptions struct {
	CRLRunOptions
	// Clusters name clusters (of those given) whose installed CA is revoked.
	Clusters []string
	// Serials are serials of cluster CAs to revoke (for clusters that cannot be
	// reached).
	Serials []*big.Int
	// Reason is the CRL reason code (ca.ParseReason); ReasonName is its name, for
	// the report.
	Reason     int
	ReasonName string
	// Now is the revocation time; nil means time.Now.
	Now func() time.Time
}

// Revoke revokes the intermediate CA of each of opts.Clusters (read from its
// cacerts) and each of opts.Serials: the source's CRL lists them (its durable
// record), and the mesh CRL set goes to every other cluster, as CRLSync does, so
// that every other cluster's Envoys refuse the revoked cluster's workloads from
// then on. A serial the record lists already is spread again, not refused
// (RevokedCA.Already): rerunning an interrupted revoke finishes it. The revoked cluster's own Secret is left as it is. Neither the root nor
// a CA of the signing path can be revoked, nor a CA the signing CA did not sign:
// those are bad input, refused before anything is signed.
func Revoke(ctx context.Context, clusters []*k8s.Cluster, src *Source, opts RevokeOptions) *CRLReport {
	now := time.Now()
	if opts.Now != nil {
		now = opts.Now()
	}
	rep := &CRLReport{}
	signer, path := src.Issuer.Anchor(), src.Issuer.Chain()
	var entries []x509.RevocationListEntry
	add := func(cluster string, serial *big.Int) error {
		for _, c := range path {
			if serial.Cmp(c.SerialNumber) != 0 {
				continue
			}
			if ca.IsSelfSigned(c) {
				return invalid(fmt.Errorf("serial %s is the root's own: a root is not revoked, it is replaced by a root rotation", ca.FormatSerialNumber(serial)))
			}
			return invalid(fmt.Errorf("serial %s is that of %s, a CA this source signs under: it is revoked by the CA above it, outside meshpki, and replaced by a root rotation", ca.FormatSerialNumber(serial), c.Subject))
		}
		if slices.ContainsFunc(entries, func(en x509.RevocationListEntry) bool { return en.SerialNumber.Cmp(serial) == 0 }) {
			return nil
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: now, ReasonCode: opts.Reason})
		rep.Revoked = append(rep.Revoked, RevokedCA{Cluster: cluster, Serial: ca.FormatSerialNumber(serial), Reason: opts.ReasonName})
		return nil
	}
	for _, name := range opts.Clusters {
		i := slices.IndexFunc(clusters, func(cl *k8s.Cluster) bool { return cl.Name == name })
		if i < 0 {
			var names []string
			for _, cl := range clusters {
				names = append(names, cl.Name)
			}
			rep.Err = invalid(fmt.Errorf("cluster %q is not among the chosen clusters %v: choose it, or revoke it by serial", name, names))
			return rep
		}
		cert, err := InstalledCA(ctx, clusters[i], namespaceOr(opts.Namespace))
		if err != nil {
			rep.Err = err
			return rep
		}
		if ca.IsSelfSigned(cert) {
			rep.Err = invalid(fmt.Errorf("cluster %s: its CA is a self-signed root, which a CRL cannot revoke", name))
			return rep
		}
		if cert.CheckSignatureFrom(signer) != nil {
			rep.Err = invalid(fmt.Errorf("cluster %s: its CA (serial %s, issuer %s) was not signed by the signing CA %s: revoke it at the CA that signed it", name, ca.FormatSerial(cert), cert.Issuer, signer.Subject))
			return rep
		}
		if err := add(name, cert.SerialNumber); err != nil {
			rep.Err = err
			return rep
		}
	}
	for _, s := range opts.Serials {
		if err := add("", s); err != nil {
			rep.Err = err
			return rep
		}
	}
	// A serial recorded already (an interrupted run, or one repeated) is not
	// revoked again: the run spreads the record, so that a rerun finishes what an
	// interrupted one began.
	if len(entries) > 0 && src.CRLAuthority != nil {
		auth, err := src.CRLAuthority(ctx)
		if err != nil {
			rep.Err = err
			return rep
		}
		recorded, _, err := auth.CRL(ctx, nil, ca.CRLOptions{TTL: src.CRLTTL, Refresh: src.CRLRefresh, DryRun: true})
		if err != nil {
			rep.Err = err
			return rep
		}
		var fresh []x509.RevocationListEntry
		for i, en := range entries {
			if ca.IsRevoked(recorded, en.SerialNumber) {
				rep.Revoked[i].Already = true
			} else {
				fresh = append(fresh, en)
			}
		}
		entries = fresh
	}
	return crlRun(ctx, clusters, src, opts.CRLRunOptions, entries, rep)
}
