package ca

import (
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// DefaultIstiodSAN is the SAN Istio's tools/certs puts on every intermediate.
const DefaultIstiodSAN = "istiod.istio-system.svc"

// DefaultIntermediateTTL is one year.
const DefaultIntermediateTTL = 8760 * time.Hour

// Profile describes one cluster's intermediate CA. It is plain data: build it with
// IntermediateProfile and change what you need.
type Profile struct {
	// Cluster names the cluster; it is the bundle's folder name and the subject's L=.
	Cluster  string
	Subject  pkix.Name
	DNSNames []string
	URIs     []*url.URL
	TTL      time.Duration
	KeyType  KeyType
	// MaxPathLen is the intermediate's pathlen; 0 (Istio's choice) means it may sign
	// only leaf certificates.
	MaxPathLen int
	// AllowShortTTL accepts a not-after cut short by the root's expiry instead of
	// refusing to sign.
	AllowShortTTL bool
	// TrustDomain is the mesh's trust domain (empty: DefaultTrustDomain): the URI
	// name constraints of every CA above the intermediate must allow its workloads'
	// SPIFFE IDs.
	TrustDomain string `json:",omitempty"`
	// Now is the clock Mint checks against and LocalIssuer signs at (valid from 5
	// minutes before it); nil means time.Now. Other issuers (Vault) sign at their
	// own time. It is not data: JSON leaves it out.
	Now func() time.Time `json:"-"`
}

// now reads p's clock.
func (p Profile) now() time.Time {
	if p.Now == nil {
		return time.Now()
	}
	return p.Now()
}

// IntermediateProfile is Istio's tools/certs profile with an ECDSA P-256 key:
// "O=<org>, CN=Intermediate CA, L=<cluster>", SAN DNS:istiod.istio-system.svc, one
// year, pathlen 0. An empty org means "Istio", as in DefaultRootProfile.
func IntermediateProfile(cluster, org string) Profile {
	if org == "" {
		org = DefaultOrg
	}
	return Profile{
		Cluster: cluster,
		Subject: pkix.Name{
			Organization: []string{org},
			CommonName:   DefaultIntermediateCN,
			Locality:     []string{cluster},
		},
		DNSNames: []string{DefaultIstiodSAN},
		TTL:      DefaultIntermediateTTL,
		KeyType:  ECDSAP256,
	}
}

// checkOrganization is the one rule for the subject's O= of roots and
// intermediates alike: when there is one, it is not empty (DefaultRootProfile and
// IntermediateProfile choose "Istio" when given no organization).
func checkOrganization(orgs []string) error {
	for _, o := range orgs {
		if strings.TrimSpace(o) == "" {
			return errors.New("subject organization (O=) is empty")
		}
	}
	return nil
}

// ValidateClusterName checks that name can be a folder and a Kubernetes label value.
func ValidateClusterName(name string) error {
	if name == "" {
		return errors.New("cluster name is empty")
	}
	if len(name) > 63 {
		return fmt.Errorf("cluster name %q is longer than 63 characters", name)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			(r == '-' || r == '_' || r == '.') && i > 0 && i < len(name)-1
		if !ok {
			return fmt.Errorf("cluster name %q: only letters, digits and inner '-', '_' or '.' are allowed", name)
		}
	}
	if IsBackupName(name) {
		return fmt.Errorf("cluster name %q is the name of a backup folder (<cluster>.bak-<time>)", name)
	}
	return nil
}

// Validate reports the first field of p that cannot make a valid intermediate.
func (p Profile) Validate() error {
	if err := ValidateClusterName(p.Cluster); err != nil {
		return err
	}
	if p.TTL <= 0 {
		return fmt.Errorf("cluster %s: ttl must be positive, got %s", p.Cluster, p.TTL)
	}
	if p.Subject.CommonName == "" && len(p.Subject.Organization) == 0 {
		return fmt.Errorf("cluster %s: subject is empty", p.Cluster)
	}
	if err := checkOrganization(p.Subject.Organization); err != nil {
		return fmt.Errorf("cluster %s: %w", p.Cluster, err)
	}
	if p.MaxPathLen < 0 {
		return fmt.Errorf("cluster %s: pathlen must be 0 or more, got %d", p.Cluster, p.MaxPathLen)
	}
	if _, err := ParseKeyType(string(p.KeyType)); err != nil {
		return fmt.Errorf("cluster %s: %w", p.Cluster, err)
	}
	for _, n := range p.DNSNames {
		if n == "" || strings.ContainsAny(n, " /:@") {
			return fmt.Errorf("cluster %s: SAN %q is not a DNS name", p.Cluster, n)
		}
		if i := strings.IndexFunc(n, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) }); i >= 0 {
			return fmt.Errorf("cluster %s: SAN %q is not a DNS name: %q at byte %d is not printable ASCII, which a certificate's DNS SAN must be (IA5String): give an internationalized name in its punycode form (xn--...)", p.Cluster, n, []rune(n[i:])[0], i)
		}
	}
	for _, u := range p.URIs {
		// The path is percent-encoded when written; the host is not, and
		// crypto/x509 refuses a certificate whose URI host is not an ASCII domain.
		h := u.Hostname()
		if i := strings.IndexFunc(h, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) }); i >= 0 {
			return fmt.Errorf("cluster %s: URI SAN %q: host %q has %q, not printable ASCII, which crypto/x509 refuses in a URI SAN: give an internationalized host in its punycode form (xn--...)", p.Cluster, u.Redacted(), h, []rune(h[i:])[0])
		}
	}
	return nil
}
