package ca

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ErrKeyInRootBundle means a file given to a root bundle holds a private key.
var ErrKeyInRootBundle = errors.New("holds a private key: a root bundle takes certificates only")

// RootBundleEntry is one root of a RootBundle.
type RootBundleEntry struct {
	// Source is the file (and certificate number) it came from.
	Source      string    `json:"source"`
	Subject     string    `json:"subject"`
	NotAfter    time.Time `json:"notAfter"`
	Fingerprint string    `json:"sha256Fingerprint"`
}

// RootBundle is a root-cert.pem trusting several roots (a root rotation's "trust
// both" file), as BuildRootBundle makes it.
type RootBundle struct {
	// PEM is the file: the first source's bytes as they are, then the other roots.
	PEM   []byte            `json:"-"`
	Roots []RootBundleEntry `json:"roots"`
	// Duplicates are the sources of certificates dropped as duplicates.
	Duplicates []string `json:"duplicates,omitempty"`
}

// ReadRootBundle reads each path (a certificate file, or a root folder, whose
// RootCertFile is read) and builds the bundle of their roots (BuildRootBundle).
func ReadRootBundle(paths []string, now time.Time) (*RootBundle, error) {
	names := make([]string, len(paths))
	data := make([][]byte, len(paths))
	for i, p := range paths {
		names[i] = p
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			names[i] = filepath.Join(p, RootCertFile)
		}
		b, err := ReadInputFile(names[i])
		if err != nil {
			return nil, err
		}
		data[i] = b
	}
	return BuildRootBundle(names, data, now)
}

// BuildRootBundle makes one roots file of the roots in data[i] (read from names[i],
// for messages): every certificate must be a root usable now (CheckRootCert);
// duplicates are dropped and reported. The first file's bytes are kept as they are
// and the other roots appended, since istiod 1.20-1.29 take a changed roots file only
// when it contains the old one byte for byte (see KeepRootsFile).
func BuildRootBundle(names []string, data [][]byte, now time.Time) (*RootBundle, error) {
	res := &RootBundle{}
	var certs []*x509.Certificate
	var first []byte
	seen := map[string]bool{}
	for i, d := range data {
		file := names[i]
		if first == nil {
			first = d
		}
		found, err := ParseCertificatesPEM(d)
		if err != nil && bytes.Contains(d, []byte("PRIVATE KEY-----")) {
			return nil, fmt.Errorf("%s %w", file, ErrKeyInRootBundle)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		for j, c := range found {
			where := file
			if len(found) > 1 {
				where = fmt.Sprintf("%s (certificate %d)", file, j+1)
			}
			if err := CheckRootCert(c, now); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", where, c.Subject, err)
			}
			fp := Fingerprint(c)
			if seen[fp] {
				res.Duplicates = append(res.Duplicates, where)
				if i == 0 {
					first = []byte{} // the first file repeats itself: no bytes to keep
				}
				continue
			}
			seen[fp] = true
			certs = append(certs, c)
			res.Roots = append(res.Roots, RootBundleEntry{Source: where, Subject: c.Subject.String(), NotAfter: c.NotAfter.UTC(), Fingerprint: fp})
		}
	}
	res.PEM = KeepRootsFile(first, certs)
	return res, nil
}
