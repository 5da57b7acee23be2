//go:build ignore

// gen writes the bad-input corpus under testdata/: go run testdata/gen.go
//
// testdata/roots/<case>/ holds a root folder (root-cert.pem, root-key.pem) and
// testdata/bundles/<case>/ a bundle folder; each case's "want" file holds the text
// the error must contain, or "ok" for input that must be accepted.
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"log"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshpki/meshpki/ca"
)

var (
	t0   = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	long = time.Date(2125, 1, 1, 0, 0, 0, 0, time.UTC)
)

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}

func ec() crypto.Signer { return must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)) }
func keyPEM(k crypto.Signer) []byte {
	if _, ok := k.(ed25519.PrivateKey); ok {
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: must(x509.MarshalPKCS8PrivateKey(k))})
	}
	return must(ca.MarshalPrivateKeyPEM(k))
}
func certPEM(c *x509.Certificate) []byte { return ca.EncodeCertificatesPEM(c) }

type spec struct {
	cn        string
	ca        bool
	pathlen   int // -1 none
	notBefore time.Time
	notAfter  time.Time
	ku        x509.KeyUsage
	eku       []x509.ExtKeyUsage
	// Name constraints, extra extensions and signature algorithm, for hostile roots.
	permitted, excluded []string
	extra               []pkix.Extension
	sigAlg              x509.SignatureAlgorithm
}

var serial int64

func mk(s spec, key crypto.Signer, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
	serial++
	if s.notBefore.IsZero() {
		s.notBefore = t0
	}
	if s.notAfter.IsZero() {
		s.notAfter = long
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: s.cn, Organization: []string{"meshpki test"}},
		NotBefore: s.notBefore, NotAfter: s.notAfter, KeyUsage: s.ku, ExtKeyUsage: s.eku,
		BasicConstraintsValid: true, IsCA: s.ca,
		PermittedDNSDomains: s.permitted, ExcludedDNSDomains: s.excluded,
		ExtraExtensions: s.extra, SignatureAlgorithm: s.sigAlg,
	}
	if s.ca {
		tmpl.MaxPathLen = s.pathlen
		tmpl.MaxPathLenZero = s.pathlen == 0
		if tmpl.KeyUsage == 0 {
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		}
	} else if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	return must(x509.ParseCertificate(must(x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey))))
}

func write(dir string, files map[string][]byte, want string) {
	must(0, os.RemoveAll(dir))
	must(0, os.MkdirAll(dir, 0o755))
	for n, b := range files {
		perm := os.FileMode(0o644)
		if strings.Contains(n, "key") {
			perm = 0o600
		}
		must(0, os.WriteFile(filepath.Join(dir, n), b, perm))
	}
	must(0, os.WriteFile(filepath.Join(dir, "want"), []byte(want+"\n"), 0o644))
}

// opensslText is the kind of text `openssl x509 -text` prints before a certificate's
// PEM block, as in root-cert.pem files made by hand following Istio's guide.
const opensslText = `Certificate:
    Data:
        Version: 3 (0x2)
        Serial Number:
            3c:0d:2e:11:9a:44:01:7f
        Signature Algorithm: ecdsa-with-SHA256
        Issuer: O = meshpki test, CN = Good Root
        Subject: O = meshpki test, CN = Good Root
        X509v3 extensions:
            X509v3 Basic Constraints: critical
                CA:TRUE
`

// dsaRootCert and dsaRootKey: a DSA root made once with openssl (crypto/x509 cannot
// create DSA certificates): openssl req -x509 -newkey dsa:params -days 36500.
const dsaRootCert = `-----BEGIN CERTIFICATE-----
MIIEoDCCBE6gAwIBAgIUR050oMbiSbs8XNBpeGmiUH64KvowCwYJYIZIAWUDBAMC
MCoxFTATBgNVBAoMDG1lc2hwa2kgdGVzdDERMA8GA1UEAwwIRFNBIFJvb3QwIBcN
MjYxMjAyMDA1OTM2WhgPMjEyNjExMDgwMDU5MzZaMCoxFTATBgNVBAoMDG1lc2hw
a2kgdGVzdDERMA8GA1UEAwwIRFNBIFJvb3QwggNDMIICNgYHKoZIzjgEATCCAikC
ggEBAIxV2InIAKiSAJMItQzBp3+JrlbK/jOzb7xYf/no98slw0xgDjTzDPRnZ+5A
9a8ExfzWBl4mAVDLF3pfC3RSxCWe9Cw0uc+eBi2oQIQHwwpiG85iaBb681YlE49B
ciFj+wB5jf4UrtCc7hyRzr2Z03uUDPa9p4wQbOBrBbuj2xKWpP4VdubU9FiC2fYX
jm0OnfnugWJK4OslgX0Qp2W05TenRS66gDRQmu5Db5JOoSlzRlSFidNEykqt79Ss
ZtF5uzgVvd3YHncUjR6eVC83WGhuX5o3ERLKRA4qeHllfgaJMP4VpnDKIaMykFQ8
Cdy5HiX23RXcMy+XVa//f1voF+8CHQD0dR/8bfCxmROEWbAzvB75eskMupcsxwCh
Mmb5AoIBAQCG1XFvRC29FyKmfWlsVsSHJWjdPLJaHSupsl02HMEumUnnqfaHQE0M
sYi+2/uMxf+QhybF1MAZdzTrHMv1VwJLdGL3vaLyE1W8yK4hE4cdyk+Vpb+QZYlo
S89d6vzgZwsLpBvYUvFnzzd0IsIsnVVEtm7RN2yxo+qzEnUi/w/qVwhRN8AL2f07
qWZQpcbB5eeqykFoiQowfSGdpXxdoK5MTnkIlRd7Vw28WCigYbnI9x5EFSbb8/Iw
Qqsfwamt+NMo1geSO/G0ky1o+T0moyr7n2M2LF1i5c5X+QjxpH3M9dsDoSK7trV0
aLTCYbo4BsaL5BFBmuqKrCerQgIhrLCoA4IBBQACggEAKwAu1GN3FZsjd58bWF9A
ByOqlJ7W3P6uCpleWPkCQCaaartY81UJ4kfI8RG+YkPomXJIRkzgGGO2COTiWoLG
TJ4zfBkINryU13WnypbhXyLVazamPcvstVbrjgyVKCF7IWFT+X5kj0dASsEOF+2D
RZ+AKpVLhA2O1aLqB/yWJhCD2eAOrrPDloHhCIfKhiKdQr23lLzjvS6OenaYo1MS
BH+hwtgCT37Kg4Y1L/XY2pSWhw72kr/+YBxT7iAp6LWFNMHEJFf8uXufJsZwAA2V
8VEB6Dyy/IO2mTH+a9I7s04oZ1fzgkTwOyc69/KRemiggYxf1BGwWOo3bR7T/5UC
CqNjMGEwHQYDVR0OBBYEFM5ajT2KMSp2K5tH3QSpwhe9YSVvMB8GA1UdIwQYMBaA
FM5ajT2KMSp2K5tH3QSpwhe9YSVvMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/
BAQDAgEGMAsGCWCGSAFlAwQDAgM/ADA8AhwKqOiOSwQVbLhwOKUgOmIJ9fjqcEr3
38pAGZQLAhwBSy+kuBXHAm9V8TG5ZbtGDNFaiIQ5Y+2Ej0/F
-----END CERTIFICATE-----
`

const dsaRootKey = `-----BEGIN PRIVATE KEY-----
MIICXgIBADCCAjYGByqGSM44BAEwggIpAoIBAQCMVdiJyACokgCTCLUMwad/ia5W
yv4zs2+8WH/56PfLJcNMYA408wz0Z2fuQPWvBMX81gZeJgFQyxd6Xwt0UsQlnvQs
NLnPngYtqECEB8MKYhvOYmgW+vNWJROPQXIhY/sAeY3+FK7QnO4ckc69mdN7lAz2
vaeMEGzgawW7o9sSlqT+FXbm1PRYgtn2F45tDp357oFiSuDrJYF9EKdltOU3p0Uu
uoA0UJruQ2+STqEpc0ZUhYnTRMpKre/UrGbRebs4Fb3d2B53FI0enlQvN1hobl+a
NxESykQOKnh5ZX4GiTD+FaZwyiGjMpBUPAncuR4l9t0V3DMvl1Wv/39b6BfvAh0A
9HUf/G3wsZkThFmwM7we+XrJDLqXLMcAoTJm+QKCAQEAhtVxb0QtvRcipn1pbFbE
hyVo3TyyWh0rqbJdNhzBLplJ56n2h0BNDLGIvtv7jMX/kIcmxdTAGXc06xzL9VcC
S3Ri972i8hNVvMiuIROHHcpPlaW/kGWJaEvPXer84GcLC6Qb2FLxZ883dCLCLJ1V
RLZu0TdssaPqsxJ1Iv8P6lcIUTfAC9n9O6lmUKXGweXnqspBaIkKMH0hnaV8XaCu
TE55CJUXe1cNvFgooGG5yPceRBUm2/PyMEKrH8GprfjTKNYHkjvxtJMtaPk9JqMq
+59jNixdYuXOV/kI8aR9zPXbA6Eiu7a1dGi0wmG6OAbGi+QRQZrqiqwnq0ICIayw
qAQfAh0A6glp8qnox9SVFkJEHrHud1cIAZV+mRSGeTyIpg==
-----END PRIVATE KEY-----
`

func main() {
	base := "testdata"
	rootKey := ec()
	root := mk(spec{cn: "Good Root", ca: true, pathlen: -1}, rootKey, nil, nil)
	otherKey := ec()
	other := mk(spec{cn: "Other Root", ca: true, pathlen: -1}, otherKey, nil, nil)

	r := func(name string, cert, key []byte, want string) {
		files := map[string][]byte{}
		if cert != nil {
			files[ca.RootCertFile] = cert
		}
		if key != nil {
			files[ca.RootKeyFile] = key
		}
		write(filepath.Join(base, "roots", name), files, want)
	}
	good, goodKey := certPEM(root), keyPEM(rootKey)
	r("ok-ecdsa", good, goodKey, "ok")
	r("ok-crlf", []byte(strings.ReplaceAll(string(good), "\n", "\r\n")), []byte(strings.ReplaceAll(string(goodKey), "\n", "\r\n")), "ok")
	r("ok-pkcs8-key", good, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: must(x509.MarshalPKCS8PrivateKey(rootKey))}), "ok")
	rsaKey := must(rsa.GenerateKey(rand.Reader, 2048))
	r("ok-rsa-pkcs1", certPEM(mk(spec{cn: "RSA Root", ca: true, pathlen: -1}, rsaKey, nil, nil)), keyPEM(rsaKey), "ok")

	r("garbage-cert", []byte("this is not a certificate\n"), goodKey, "root-cert.pem: no PEM data found")
	r("truncated-cert", good[:len(good)/2], goodKey, "root-cert.pem: no PEM data found")
	r("empty-cert", []byte{}, goodKey, "root-cert.pem: empty")
	r("empty-key", good, []byte("\n"), "root-key.pem: empty")
	r("missing-key", good, nil, "root-key.pem: no such file")
	r("der-cert", root.Raw, goodKey, "root-cert.pem: no PEM data found")
	// RFC 7468 and istiod ignore text outside the PEM blocks (openssl x509 -text output,
	// comments); a block cut short is still an error.
	r("ok-text-around", append(append([]byte(opensslText), good...), "# comment after the end\n"...), goodKey, "ok")
	r("truncated-second-cert", append(append([]byte{}, good...), certPEM(other)[:200]...), goodKey, "root-cert.pem: malformed or truncated PEM block after certificate 1")
	r("broken-block-before-good", append(append([]byte{}, certPEM(other)[:200]...), good...), goodKey, "root-cert.pem: no PEM data found")
	r("two-certs", append(append([]byte{}, good...), certPEM(other)...), goodKey, "root-cert.pem: holds 2 certificates, want 1")
	r("cert-is-key", goodKey, goodKey, `root-cert.pem: block 1 is "EC PRIVATE KEY", want CERTIFICATE`)
	r("key-is-cert", good, good, `root-key.pem: PEM block is "CERTIFICATE", want a private key`)
	//lint:ignore SA1019 the corpus needs a legacy encrypted key
	encBlock := must(x509.EncryptPEMBlock(rand.Reader, "EC PRIVATE KEY", must(x509.MarshalECPrivateKey(rootKey.(*ecdsa.PrivateKey))), []byte("secret"), x509.PEMCipherAES256)) //nolint:staticcheck
	r("encrypted-key-legacy", good, pem.EncodeToMemory(encBlock), "root-key.pem: private key is encrypted")
	r("encrypted-key-pkcs8", good, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x00}}), "root-key.pem: private key is encrypted")
	r("mismatched-key", good, keyPEM(otherKey), "root-key.pem: private key does not match the certificate")
	r("malformed-key", good, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("not asn1")}), "root-key.pem: malformed EC PRIVATE KEY")
	leafKey := ec()
	r("leaf-as-root", certPEM(mk(spec{cn: "Leaf", ca: false}, leafKey, nil, nil)), keyPEM(leafKey), "root-cert.pem: certificate is not a CA")
	pl0Key := ec()
	r("root-pathlen-0", certPEM(mk(spec{cn: "Pathlen0 Root", ca: true, pathlen: 0}, pl0Key, nil, nil)), keyPEM(pl0Key), "root-cert.pem: certificate has pathlen 0")
	expKey := ec()
	r("expired-root", certPEM(mk(spec{cn: "Expired Root", ca: true, pathlen: -1, notBefore: time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC), notAfter: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)}, expKey, nil, nil)), keyPEM(expKey), "root-cert.pem: certificate has expired")
	futKey := ec()
	r("not-yet-valid-root", certPEM(mk(spec{cn: "Future Root", ca: true, pathlen: -1, notBefore: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}, futKey, nil, nil)), keyPEM(futKey), "root-cert.pem: certificate is not valid yet")
	weak := must(rsa.GenerateKey(rand.Reader, 1024))
	r("rsa-1024-root", certPEM(mk(spec{cn: "Weak Root", ca: true, pathlen: -1}, weak, nil, nil)), keyPEM(weak), "root-cert.pem: key is too weak: RSA 1024 bits")
	p224 := must(ecdsa.GenerateKey(elliptic.P224(), rand.Reader))
	r("p224-root", certPEM(mk(spec{cn: "P224 Root", ca: true, pathlen: -1}, p224, nil, nil)), keyPEM(p224), "root-cert.pem: key is too weak: ECDSA P-224")
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	r("ed25519-root", certPEM(mk(spec{cn: "Ed25519 Root", ca: true, pathlen: -1}, edKey, nil, nil)), keyPEM(edKey), "root-cert.pem: unsupported public key type ed25519.PublicKey")
	intKey := ec()
	r("intermediate-as-root", certPEM(mk(spec{cn: "Some Intermediate", ca: true, pathlen: 1}, intKey, root, rootKey)), keyPEM(intKey), "root-cert.pem: certificate is not self-signed")
	noSignKey := ec()
	r("ca-without-certsign", certPEM(mk(spec{cn: "No CertSign", ca: true, pathlen: -1, ku: x509.KeyUsageDigitalSignature}, noSignKey, nil, nil)), keyPEM(noSignKey), "root-cert.pem: certificate's key usage lacks keyCertSign")

	// Roots under which istiod would refuse every intermediate: checked up front (exit 2).
	ekuKey := ec()
	r("root-eku-client-only", certPEM(mk(spec{cn: "ClientAuth Root", ca: true, pathlen: -1, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ekuKey, nil, nil)), keyPEM(ekuKey), "root-cert.pem: certificate's extended key usage (clientAuth) excludes serverAuth")
	ekuOKKey := ec()
	r("ok-root-eku-server-client", certPEM(mk(spec{cn: "ServerAuth Root", ca: true, pathlen: -1, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, ekuOKKey, nil, nil)), keyPEM(ekuOKKey), "ok")
	critKey := ec()
	crit := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 55555, 1}, Critical: true, Value: []byte{0x05, 0x00}}
	r("root-unknown-critical-extension", certPEM(mk(spec{cn: "Critical Root", ca: true, pathlen: -1, extra: []pkix.Extension{crit}}, critKey, nil, nil)), keyPEM(critKey), "root-cert.pem: certificate has an unhandled critical extension 1.3.6.1.4.1.55555.1")
	// Name constraints depend on the intermediate's SANs: "mint: " cases load as a root
	// but must be refused before minting with the default profile.
	ncKey := ec()
	r("root-name-constraints-exclude-san", certPEM(mk(spec{cn: "Example-only Root", ca: true, pathlen: -1, permitted: []string{"example.com"}}, ncKey, nil, nil)), keyPEM(ncKey), "mint: root's name constraints exclude the intermediate's SANs")
	exKey := ec()
	r("root-excluded-dns", certPEM(mk(spec{cn: "Excluding Root", ca: true, pathlen: -1, excluded: []string{"istio-system.svc"}}, exKey, nil, nil)), keyPEM(exKey), "mint: root's name constraints exclude the intermediate's SANs")
	svcKey := ec()
	r("ok-name-constraints-svc", certPEM(mk(spec{cn: "Svc-only Root", ca: true, pathlen: -1, permitted: []string{"svc"}}, svcKey, nil, nil)), keyPEM(svcKey), "ok")
	pl1Key := ec()
	r("ok-pathlen-1", certPEM(mk(spec{cn: "Pathlen1 Root", ca: true, pathlen: 1}, pl1Key, nil, nil)), keyPEM(pl1Key), "ok")
	// Weak algorithms are named as such, not as "not self-signed".
	sha1Key := must(rsa.GenerateKey(rand.Reader, 2048))
	r("sha1-root", certPEM(mk(spec{cn: "SHA-1 Root", ca: true, pathlen: -1, sigAlg: x509.SHA1WithRSA}, sha1Key, nil, nil)), keyPEM(sha1Key), "root-cert.pem: certificate is signed with SHA1-RSA, an insecure algorithm")
	r("dsa-root", []byte(dsaRootCert), []byte(dsaRootKey), "root-cert.pem: DSA keys are not supported")

	// Keys as openssl and editors write them.
	ecParams := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	r("ok-ecparam-genkey-key", good, append(append([]byte{}, ecParams...), goodKey...), "ok") // openssl ecparam -genkey -name prime256v1
	r("ok-key-text-around", good, append(append([]byte("# mesh root key, made 2026-01-01\n"), goodKey...), "(end of key)\n"...), "ok")
	r("key-bom", good, append([]byte("\xef\xbb\xbf"), goodKey...), "root-key.pem: starts with a UTF-8 byte order mark (BOM)")
	r("cert-bom", append([]byte("\xef\xbb\xbf"), good...), goodKey, "root-cert.pem: starts with a UTF-8 byte order mark (BOM)")
	r("two-keys", good, append(append([]byte{}, goodKey...), keyPEM(otherKey)...), "root-key.pem: holds 2 private keys, want 1")
	r("ecparams-only", good, ecParams, "root-key.pem: holds EC PARAMETERS but no private key")
	r("truncated-key", good, goodKey[:len(goodKey)-30], "root-key.pem: no PEM data found")

	// Bundles.
	b := func(name string, files map[string][]byte, want string) {
		write(filepath.Join(base, "bundles", name), files, want)
	}
	interKey := ec()
	inter := mk(spec{cn: "Intermediate CA", ca: true, pathlen: 0, ku: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}, interKey, root, rootKey)
	istio := func(cert, key, chain, roots []byte) map[string][]byte {
		return map[string][]byte{ca.CACertFile: cert, ca.CAKeyFile: key, ca.CertChainFile: chain, ca.RootCertFile: roots}
	}
	ic, ik := certPEM(inter), keyPEM(interKey)
	chain := append(append([]byte{}, ic...), good...)
	b("ok-istio", istio(ic, ik, chain, good), "ok")
	b("ok-tls", map[string][]byte{ca.TLSCertFile: chain, ca.TLSKeyFile: ik, ca.TLSCAFile: good}, "ok")
	b("ok-openssl-text", istio(append([]byte(opensslText), ic...), ik, chain, append([]byte(opensslText), good...)), "ok")
	b("ok-two-roots", istio(ic, ik, chain, append(append([]byte{}, good...), certPEM(other)...)), "ok")
	b("missing-key", map[string][]byte{ca.CACertFile: ic, ca.CertChainFile: chain, ca.RootCertFile: good}, "missing-file: ca-key.pem: missing")
	b("missing-root", map[string][]byte{ca.CACertFile: ic, ca.CAKeyFile: ik, ca.CertChainFile: chain}, "missing-file: root-cert.pem: missing")
	b("no-bundle-files", map[string][]byte{"README": []byte("hi")}, "missing-file: neither ca-cert.pem nor tls.crt found")
	b("key-mismatch", istio(ic, keyPEM(otherKey), chain, good), "key-mismatch: ca-key.pem: private key does not match the certificate")
	b("encrypted-key", istio(ic, pem.EncodeToMemory(encBlock), chain, good), "key-encrypted: ca-key.pem: private key is encrypted")
	b("reserved-key", func() map[string][]byte {
		f := istio(ic, ik, chain, good)
		f[ca.ReservedKey] = []byte("true")
		return f
	}(), "reserved-key: istio-generated")
	lk := ec()
	leaf := mk(spec{cn: "Not A CA"}, lk, root, rootKey)
	lc := certPEM(leaf)
	b("leaf-as-intermediate", istio(lc, keyPEM(lk), append(append([]byte{}, lc...), good...), good), "not-ca: ca-cert.pem: certificate is not a CA")
	b("wrong-chain-order", istio(ic, ik, append(append([]byte{}, good...), ic...), good), "chain-order: cert-chain.pem: does not start with the certificate in ca-cert.pem")
	b("other-root", istio(ic, ik, chain, certPEM(other)), "chain: ca-cert.pem: does not verify against root-cert.pem")
	ek := ec()
	ekuInter := mk(spec{cn: "ClientAuth-only Intermediate", ca: true, pathlen: 0, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ek, root, rootKey)
	b("eku-client-only", istio(certPEM(ekuInter), keyPEM(ek), append(certPEM(ekuInter), good...), good), "its extended key usage excludes serverAuth")
	xk := ec()
	expInter := mk(spec{cn: "Expired Intermediate", ca: true, pathlen: 0, notBefore: time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC), notAfter: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)}, xk, root, rootKey)
	b("expired-intermediate", istio(certPEM(expInter), keyPEM(xk), append(certPEM(expInter), good...), good), "validity: ca-cert.pem: certificate has expired")
	wk := must(rsa.GenerateKey(rand.Reader, 1024))
	weakInter := mk(spec{cn: "Weak Intermediate", ca: true, pathlen: 0}, wk, root, rootKey)
	b("rsa-1024-intermediate", istio(certPEM(weakInter), keyPEM(wk), append(certPEM(weakInter), good...), good), "key-strength: ca-cert.pem: key is too weak: RSA 1024 bits")
	b("root-not-self-signed", istio(ic, ik, append(append([]byte{}, ic...), ic...), ic), "root: root-cert.pem: root 1 (CN=Intermediate CA,O=meshpki test): certificate is not self-signed")
	b("empty-chain", istio(ic, ik, []byte{}, good), "parse: cert-chain.pem: empty")
	b("two-certs-in-ca-cert", istio(chain, ik, chain, good), "parse: ca-cert.pem: holds 2 certificates, want 1")
	b("truncated-root", istio(ic, ik, chain, good[:len(good)-40]), "parse: root-cert.pem: no PEM data found")
	// istiod reads only the first PEM block of ca-key.pem.
	b("ecparams-before-key", istio(ic, append(append([]byte{}, ecParams...), ik...), chain, good), "key: ca-key.pem: starts with an EC PARAMETERS block")
	// The mesh root itself as a cluster's CA: its key would sit in the cluster.
	b("root-as-intermediate", istio(good, goodKey, good, good), "root-key: ca-cert.pem: is the root of root-cert.pem itself")
	log.Print("corpus written")
}
