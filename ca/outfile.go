package ca

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/meshpki/meshpki/internal/atomicfs"
	"github.com/meshpki/meshpki/internal/textfmt"
)

// ErrKeyFile means an output file would replace a file that holds a private key.
var ErrKeyFile = errors.New("holds a private key: never written over")

// OutputFileOptions tune WriteOutputFile.
type OutputFileOptions struct {
	// Force replaces an existing regular file (never a key file, a folder or a
	// special file).
	Force bool
	// Perm is the new file's mode (0644 for certificates and CRLs).
	Perm fs.FileMode
	// Protect are folders the file must not be written into (the folder of the
	// CA whose CRL or roots are written, say).
	Protect []string
}

// WriteOutputFile writes data to name atomically (a temporary file, renamed): a
// result a command hands out, such as a CRL or a root bundle. An existing file is
// replaced only with Force, and never when it is not a regular file, when it
// holds a private key, or when it lies in a Protect folder; without Force, a file
// created meanwhile by another run is not replaced either. Errors name the file;
// an existing one wraps ErrExists.
func WriteOutputFile(name string, data []byte, opts OutputFileOptions) error {
	if err := CheckOutputFile(name, opts); err != nil {
		return err
	}
	write := atomicfs.WriteFile
	if !opts.Force {
		write = atomicfs.CreateFile // another run may have written it since the check
	}
	if err := write(name, data, opts.Perm); errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s: %w", name, ErrExists)
	} else if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// CheckOutputFile runs WriteOutputFile's checks without writing, for a command to
// refuse its --out before it does any work (signs a CRL, say).
func CheckOutputFile(name string, opts OutputFileOptions) error {
	abs, err := filepath.Abs(name)
	if err != nil {
		return err
	}
	for _, dir := range opts.Protect {
		if dir == "" {
			continue // no such folder (a source without one)
		}
		d, err := filepath.Abs(dir)
		if err == nil && (filepath.Dir(abs) == d || sameDir(filepath.Dir(abs), d)) {
			return fmt.Errorf("%s: in %s, the CA's own folder: write it elsewhere", name, dir)
		}
	}
	st, err := os.Lstat(name)
	switch {
	case err == nil && !st.Mode().IsRegular():
		return fmt.Errorf("%s is %s: only a regular file is ever replaced; choose another file", name, textfmt.FileMode(st.Mode()))
	case err == nil && holdsKey(name):
		return fmt.Errorf("%s %w", name, ErrKeyFile)
	case err == nil && !opts.Force:
		return fmt.Errorf("%s: %w", name, ErrExists)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return nil
}

// sameDir reports whether a and b are the same folder (links resolved).
func sameDir(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// holdsKey reports whether file name (a regular file) holds a PEM private key.
func holdsKey(name string) bool {
	data, err := ReadInputFile(name)
	return err == nil && bytes.Contains(data, []byte("PRIVATE KEY-----"))
}
