package ca

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"github.com/meshpki/meshpki/internal/textfmt"
)

// MaxInputFile is the largest file meshpki reads: 4 MiB. No real PEM file, cluster
// list or token comes near it (a Kubernetes Secret holds at most 1 MiB in all).
const MaxInputFile = 4 << 20

// ErrNotRegular means an input file is a FIFO, a device, a socket or a folder.
var ErrNotRegular = errors.New("not a regular file (meshpki reads only regular files, or links to them)")

// ErrTooLarge means an input file is larger than MaxInputFile.
var ErrTooLarge = fmt.Errorf("larger than %d MiB, more than any real PEM file", MaxInputFile>>20)

// ReadInputFile reads name, following symbolic links, if it is a regular file of at
// most MaxInputFile bytes. Anything else is refused before a byte is read, so that
// reading never blocks (a FIFO without a writer) nor runs without end (/dev/zero).
// Errors name the file and say what it is.
func ReadInputFile(name string) ([]byte, error) {
	st, err := os.Stat(name)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			pe.Op = "open" // what the caller asked for, as os.ReadFile says it
		}
		return nil, err
	}
	if err := checkInputMode(name, st); err != nil {
		return nil, err
	}
	// O_NONBLOCK: should name have been swapped for a FIFO since the Stat, opening
	// it does not wait for a writer, and the check on the open file refuses it.
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil {
		return nil, err
	}
	if err := checkInputMode(name, st); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxInputFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > MaxInputFile {
		return nil, fmt.Errorf("%s: %w", name, ErrTooLarge)
	}
	return b, nil
}

// CheckInputFile refuses, as ReadInputFile would, a file that exists but is not a
// regular file of at most MaxInputFile bytes; a missing file passes. It is for
// files another library reads (kubeconfigs, read by client-go).
func CheckInputFile(name string) error {
	st, err := os.Stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return checkInputMode(name, st)
}

func checkInputMode(name string, st fs.FileInfo) error {
	m := st.Mode()
	if m.IsRegular() {
		if st.Size() > MaxInputFile {
			return fmt.Errorf("%s: %d bytes, %w", name, st.Size(), ErrTooLarge)
		}
		return nil
	}
	return fmt.Errorf("%s is %s, %w", name, textfmt.FileMode(m), ErrNotRegular)
}
