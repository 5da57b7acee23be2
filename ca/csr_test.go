package ca_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/catest"
	"github.com/meshpki/meshpki/internal/testenv"
)

// newCSRDir writes a waiting CSR folder for cluster and returns it with the CSR.
func newCSRDir(t *testing.T, parent, cluster string) (string, *x509.CertificateRequest) {
	t.Helper()
	csrPEM, keyPEM, err := ca.NewCSR(ca.IntermediateProfile(cluster, "Example Corp"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, cluster)
	if _, err := ca.WriteDir(dir, map[string][]byte{ca.CAKeyFile: keyPEM, ca.CSRFile: csrPEM}, ca.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	csr, err := ca.ParseCSRPEM(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	return dir, csr
}

// sign signs csr under parent with a template a test shapes.
func sign(t *testing.T, parent *catest.CA, csr *x509.CertificateRequest, edit func(*x509.Certificate)) []byte {
	t.Helper()
	serial, _ := ca.NewSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: csr.Subject, DNSNames: csr.DNSNames,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.Cert, csr.PublicKey, parent.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return ca.EncodeCertificatesPEM(c)
}

// The CSR carries the whole profile as requested extensions.
func TestNewCSRCarriesTheProfile(t *testing.T) {
	_, csr := newCSRDir(t, t.TempDir(), "east")
	if csr.Subject.String() != "CN=Intermediate CA,O=Example Corp,L=east" || strings.Join(csr.DNSNames, ",") != ca.DefaultIstiodSAN {
		t.Fatalf("subject %s, SANs %v", csr.Subject, csr.DNSNames)
	}
	// Signed by a CA that copies the CSR's extensions as they are (crypto/x509
	// parses requested extensions into csr.Extensions).
	root := catest.Root(t, catest.Options{})
	serial, _ := ca.NewSerial()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: csr.Subject, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), ExtraExtensions: csr.Extensions}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, csr.PublicKey, root.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	if !c.IsCA || !c.MaxPathLenZero || c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign|x509.KeyUsageDigitalSignature || len(c.ExtKeyUsage) != 0 {
		t.Fatalf("copied extensions: CA %v pathlen0 %v usage %b eku %v", c.IsCA, c.MaxPathLenZero, c.KeyUsage, c.ExtKeyUsage)
	}
}

// Every bad signed certificate is refused with its own reason, naming the file
// part, and the folder stays as it was.
func TestImportRefuses(t *testing.T) {
	root := catest.Root(t, catest.Options{CN: "Offline Root"})
	other := catest.Root(t, catest.Options{CN: "Other Root"})
	org := root.Sub(t, catest.Options{CN: "Org CA", NotAfter: time.Now().Add(200 * 24 * time.Hour)})
	pathZero := root.Sub(t, catest.Options{CN: "Pathlen Zero CA", PathLen: catest.PathLen(0)})
	mid := root.Sub(t, catest.Options{CN: "Middle CA"})
	low := mid.Sub(t, catest.Options{CN: "Lower CA"})
	expiredMid := root.Sub(t, catest.Options{CN: "Expired Middle", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	parent := t.TempDir()
	dir, csr := newCSRDir(t, parent, "east")
	_, otherCSR := newCSRDir(t, parent, "west")
	rootPEM := root.CertPEM()
	for _, tt := range []struct {
		name  string
		cert  []byte
		chain []byte
		roots []byte
		want  error
		msg   string
	}{
		{"signed for another key", sign(t, root, otherCSR, nil), nil, rootPEM, ca.ErrOtherKey, ""},
		{"EKU serverAuth only", sign(t, root, csr, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }), nil, rootPEM, ca.ErrImportEKU, "serverAuth"},
		{"without CA:true", sign(t, root, csr, func(c *x509.Certificate) { c.IsCA, c.MaxPathLenZero = false, false }), nil, rootPEM, ca.ErrNotCA, ""},
		{"without keyCertSign", sign(t, root, csr, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }), nil, rootPEM, ca.ErrNoCertSign, ""},
		{"pathlen unlimited", sign(t, root, csr, func(c *x509.Certificate) { c.MaxPathLenZero, c.MaxPathLen = false, -1 }), nil, rootPEM, ca.ErrImportPathLen, "unlimited"},
		{"outlives its issuer", sign(t, org, csr, nil), org.CertPEM(), rootPEM, ca.ErrOutlivesIssuer, "Org CA"},
		{"too little life", sign(t, root, csr, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(24 * time.Hour) }), nil, rootPEM, ca.ErrShortLife, "want at least 30d"},
		{"issuing CA with pathlen 0", sign(t, pathZero, csr, nil), pathZero.CertPEM(), rootPEM, ca.ErrPathLen, "Pathlen Zero CA"},
		{"chain missing a link", sign(t, low, csr, nil), low.CertPEM(), rootPEM, ca.ErrChainOtherRoot, "Middle CA"},
		{"chain out of order", sign(t, low, csr, nil), append(mid.CertPEM(), low.CertPEM()...), rootPEM, ca.ErrChainOrder, "Lower CA"},
		{"chain to another root", sign(t, root, csr, nil), nil, other.CertPEM(), ca.ErrChainOtherRoot, "Offline Root"},
		{"expired middle", sign(t, expiredMid, csr, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-2 * time.Hour) }), expiredMid.CertPEM(), rootPEM, ca.ErrShortLife, "expired"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := ca.ReadDir(dir)
			_, err := ca.ImportDir(dir, tt.cert, tt.chain, tt.roots, false, ca.ImportOptions{})
			if err == nil || !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) || strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatalf("got %v, want %v containing %q", err, tt.want, tt.msg)
			}
			after, _ := ca.ReadDir(dir)
			if len(after) != len(before) || !bytes.Equal(after[ca.CAKeyFile], before[ca.CAKeyFile]) {
				t.Fatal("a refused import changed the folder")
			}
			if st := ca.ReadCSRDir(dir); st.State != ca.CSRWaiting {
				t.Fatalf("state %s", st.State)
			}
		})
	}
}

// openssl signs meshpki's CSRs, in both ways a CA team would: `openssl x509 -req
// -copy_extensions copy` straight under the root, and `openssl ca` under an
// organisation's issuing CA (three levels), including `-text` output before the
// PEM block. Each import passes istiod's checks and workloads of the two
// clusters complete mTLS.
func TestImportOpenSSLSigned(t *testing.T) {
	testenv.Tool(t, "openssl")
	work := t.TempDir()
	root := catest.Root(t, catest.Options{CN: "Offline Root"})
	org := root.Sub(t, catest.Options{CN: "Org Issuing CA", PathLen: catest.PathLen(1)})
	write := func(name string, data []byte) string {
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rootCert, rootKey := write("root.pem", root.CertPEM()), write("root-key.pem", root.KeyPEM(t))
	orgCert, orgKey := write("org.pem", org.CertPEM()), write("org-key.pem", org.KeyPEM(t))
	run := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command("openssl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	bundles := filepath.Join(work, "csrs")
	east, _ := newCSRDir(t, bundles, "east")
	west, _ := newCSRDir(t, bundles, "west")

	// east: openssl x509 -req under the root, extensions copied from the CSR.
	eastCert := filepath.Join(work, "east.pem")
	run("x509", "-req", "-in", filepath.Join(east, ca.CSRFile), "-CA", rootCert, "-CAkey", rootKey, "-days", "365",
		"-copy_extensions", "copy", "-set_serial", "0x4d657368", "-out", eastCert)
	text := run("x509", "-in", eastCert, "-text") // explanatory text, then the PEM block
	if _, err := ca.ImportDir(east, text, nil, root.CertPEM(), false, ca.ImportOptions{}); err != nil {
		t.Fatalf("import east: %v", err)
	}

	// west: openssl ca under the org CA, with a minimal CA configuration.
	cadir := filepath.Join(work, "openssl-ca")
	os.MkdirAll(filepath.Join(cadir, "new"), 0o700)
	os.WriteFile(filepath.Join(cadir, "index.txt"), nil, 0o600)
	os.WriteFile(filepath.Join(cadir, "serial"), []byte("1000\n"), 0o600)
	conf := write("ca.cnf", []byte(`[ ca ]
default_ca = org
[ org ]
dir = `+cadir+`
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir/new
certificate = `+orgCert+`
private_key = `+orgKey+`
default_md = sha256
default_days = 365
policy = anything
copy_extensions = copy
unique_subject = no
[ anything ]
organizationName = optional
commonName = supplied
localityName = optional
`))
	westCert := filepath.Join(work, "west.pem")
	run("ca", "-batch", "-config", conf, "-in", filepath.Join(west, ca.CSRFile), "-out", westCert, "-notext")
	signed, err := os.ReadFile(westCert)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.ImportDir(west, signed, org.CertPEM(), root.CertPEM(), false, ca.ImportOptions{})
	if err != nil {
		t.Fatalf("import west: %v", err)
	}
	if len(b.Chain) != 3 || !b.Chain[1].Equal(org.Cert) {
		t.Fatalf("west chain of %d", len(b.Chain))
	}
	// Imported twice: refused without force.
	if _, err := ca.ImportDir(west, signed, org.CertPEM(), root.CertPEM(), false, ca.ImportOptions{}); !errors.Is(err, ca.ErrImported) {
		t.Fatalf("second import: %v", err)
	}

	var ws []*ca.Workload
	for _, d := range []string{east, west} {
		if st := ca.ReadCSRDir(d); st.State != ca.CSRImported {
			t.Fatalf("%s: %s %s", d, st.State, st.Problem)
		}
		files, err := ca.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		rep := ca.Verify(files, ca.VerifyOptions{})
		if !rep.OK() {
			t.Fatalf("%s: %v", d, rep.Problems)
		}
		bd, _, err := ca.ParseBundle(files, ca.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w, err := bd.IssueWorkload(ca.SPIFFEID("cluster.local", "default", filepath.Base(d)), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	ctx := t.Context()
	if err := ca.Handshake(ctx, ws[0], ws[1]); err != nil {
		t.Fatalf("east <- west: %v", err)
	}
	if err := ca.Handshake(ctx, ws[1], ws[0]); err != nil {
		t.Fatalf("west <- east: %v", err)
	}
}
