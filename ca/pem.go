package ca

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// ParseCertificatesPEM reads one or more PEM "CERTIFICATE" blocks, in order. It is
// stricter than istiod: any other block type, or anything but white space between
// or after the blocks, is an error, because it usually means a truncated or
// concatenated-by-mistake file.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	if strings.TrimSpace(string(data)) == "" {
		return nil, errors.New("empty")
	}
	var certs []*x509.Certificate
	rest := data
	for len(strings.TrimSpace(string(rest))) > 0 {
		block, r := pem.Decode(rest)
		if block == nil {
			if len(certs) == 0 {
				return nil, ErrNoPEM
			}
			return nil, fmt.Errorf("unexpected data after certificate %d", len(certs))
		}
		if leading := strings.TrimSpace(string(rest[:len(rest)-len(r)])); !strings.HasPrefix(leading, "-----BEGIN") {
			return nil, fmt.Errorf("unexpected data before certificate %d", len(certs)+1)
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
