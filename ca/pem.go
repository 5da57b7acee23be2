package ca

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

var pemBegin = []byte("-----BEGIN")

// ParseCertificatesPEM reads one or more PEM "CERTIFICATE" blocks, in order, as istiod
// and RFC 7468 (section 2) read them: text outside the blocks, such as what `openssl x509
// -text` prints before a certificate or comment lines, is ignored. Any other block type,
// and a block that is cut short or malformed (a BEGIN line pem.Decode cannot complete),
// is an error, so a truncated file is never taken for a shorter one. It runs in time
// linear in len(data).
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty")
	}
	if bytes.HasPrefix(data, utf8BOM) {
		return nil, ErrBOM
	}
	var certs []*x509.Certificate
	rest := data
	for {
		i := bytes.Index(rest, pemBegin)
		if i < 0 {
			break // only text is left
		}
		rest = rest[i:]
		block, r := pem.Decode(rest)
		used := len(rest) - len(r)
		// pem.Decode skips a BEGIN line it cannot complete and goes on to the next one:
		// a second BEGIN inside what it consumed means the first block was broken.
		if block == nil || bytes.Contains(rest[len(pemBegin):used], pemBegin) {
			if len(certs) == 0 {
				return nil, ErrNoPEM
			}
			return nil, fmt.Errorf("malformed or truncated PEM block after certificate %d", len(certs))
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("block %d is %q, want CERTIFICATE", len(certs)+1, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
		rest = r
	}
	if len(certs) == 0 {
		return nil, ErrNoPEM
	}
	return certs, nil
}

// ParseCertificatePEM reads exactly one PEM certificate.
func ParseCertificatePEM(data []byte) (*x509.Certificate, error) {
	certs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("holds %d certificates, want 1", len(certs))
	}
	return certs[0], nil
}

// EncodeCertificatesPEM encodes certs as concatenated PEM blocks.
func EncodeCertificatesPEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}
