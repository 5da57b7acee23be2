package ca

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/meshpki/meshpki/internal/atomicfs"
)

// ErrRootExists means a root folder already holds a root: WriteRootDir never
// overwrites one.
var ErrRootExists = errors.New("a root is never overwritten")

// CheckRootDirFree reports, before a key is generated, whether dir can take a new
// root: neither RootCertFile nor RootKeyFile may exist in it (ErrRootExists).
func CheckRootDirFree(dir string) error {
	for _, f := range []string{filepath.Join(dir, RootCertFile), filepath.Join(dir, RootKeyFile)} {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("%s already exists: %w", f, ErrRootExists)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// WriteRootDir writes a root made by CreateRoot into dir (created 0700 if missing),
// for ReadRootDir to read: the key (0600) first and the certificate last, so that a
// folder with a certificate always has its key. Both files are created exclusively:
// a root another run wrote meanwhile is never overwritten (ErrRootExists), and a key
// written just before a refused certificate is removed again. A nil keyPEM writes
// the certificate alone: the root's key is held elsewhere (an HSM, a key service).
func WriteRootDir(dir string, root *Root, keyPEM []byte) error {
	certFile, keyFile := filepath.Join(dir, RootCertFile), filepath.Join(dir, RootKeyFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	exists := func(err error) error {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %w", err, ErrRootExists)
		}
		return err
	}
	if keyPEM == nil {
		if _, err := os.Lstat(keyFile); err == nil {
			return fmt.Errorf("%s already exists: %w", keyFile, ErrRootExists)
		}
		return exists(atomicfs.CreateFile(certFile, EncodeCertificatesPEM(root.Cert), 0o644))
	}
	if err := atomicfs.CreateFile(keyFile, keyPEM, 0o600); err != nil {
		return exists(err)
	}
	if err := atomicfs.CreateFile(certFile, EncodeCertificatesPEM(root.Cert), 0o644); err != nil {
		_ = os.Remove(keyFile) // ours: written just above
		return exists(err)
	}
	return nil
}
