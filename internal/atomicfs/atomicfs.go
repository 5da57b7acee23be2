// Package atomicfs writes files and folders so that no reader, and no crash, ever
// sees them half-written: everything is written under a temporary name beside its
// destination, made durable (fsync of each file, or one syncfs(2) for many), then
// renamed into place, and the parent folder is fsynced so that the rename itself
// survives a power cut. Files are 0600 and folders 0700 unless asked otherwise.
//
// It also locks a folder that many processes write into (LockDir), so that the
// temporary entries an interrupted run left behind can be told from a live run's,
// and removed (RemoveOrphans).
package atomicfs

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"
)

// DefaultPerm is the mode of a file written without one: readable by its owner only.
const DefaultPerm fs.FileMode = 0o600

// probePrefix names the folders CheckDirWritable makes for a moment.
const probePrefix = ".meshpki-probe-"

// tempName matches the temporary folders Stage and CheckDirWritable make beside a
// destination: ".<name>.tmp-<digits>" and ".meshpki-probe-<digits>".
var tempName = regexp.MustCompile(`^\.(.+\.tmp|meshpki-probe)-[0-9]+$`)

// IsTemp reports whether name (a base name) is one of the temporary folders this
// package makes.
func IsTemp(name string) bool { return tempName.MatchString(name) }

// WriteFile writes one file atomically: a temporary file in the same folder, with
// mode perm (DefaultPerm when 0), fsynced, renamed over name, and the folder
// fsynced.
func WriteFile(name string, data []byte, perm fs.FileMode) error {
	tmp, err := writeTemp(name, data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(name))
}

// CreateFile is WriteFile that never replaces: the synced temporary file is
// hard-linked to name, which fails with an error matching fs.ErrExist if name
// exists, even when another process creates it at the same moment.
func CreateFile(name string, data []byte, perm fs.FileMode) error {
	tmp, err := writeTemp(name, data, perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, name); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", name, fs.ErrExist)
		}
		return err
	}
	return SyncDir(filepath.Dir(name))
}

// writeTemp writes data to a new fsynced temporary file beside name.
func writeTemp(name string, data []byte, perm fs.FileMode) (string, error) {
	if perm == 0 {
		perm = DefaultPerm
	}
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-")
	if err != nil {
		return "", err
	}
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	return f.Name(), nil
}

// SyncDir fsyncs a folder so that renames in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// File is one file of a folder to write: its content and mode (DefaultPerm when 0).
type File struct {
	Data []byte
	Perm fs.FileMode
}

// Staged is a folder written under a temporary name beside its destination,
// waiting to be renamed into place.
type Staged struct {
	dir, tmp string
	files    []string // full paths, for platforms without syncfs
}

// Dir is the destination folder.
func (s *Staged) Dir() string { return s.dir }

// Stage writes files into a fresh 0700 temporary folder beside dir (whose parent
// is made, 0700, if missing). File names must be plain names, without a folder.
// With fsync each file and the folder are fsynced; without, the caller makes them
// durable with Sync before renaming. Nothing is left behind on error.
func Stage(dir string, files map[string]File, fsync bool) (s *Staged, err error) {
	dir = filepath.Clean(dir)
	parent := filepath.Dir(dir)
	for n := range files {
		if n != filepath.Base(n) || n == "." || n == ".." || n == "" {
			return nil, fmt.Errorf("%s: bad file name %q", dir, n)
		}
	}
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	s = &Staged{dir: dir, tmp: tmp}
	for _, n := range slices.Sorted(maps.Keys(files)) {
		name := filepath.Join(tmp, n)
		if err := writeNewFile(name, files[n], fsync); err != nil {
			return nil, fmt.Errorf("write %s: %w", filepath.Join(dir, n), err)
		}
		s.files = append(s.files, name)
	}
	if fsync {
		if err := SyncDir(tmp); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func writeNewFile(name string, file File, fsync bool) error {
	perm := file.Perm
	if perm == 0 {
		perm = DefaultPerm
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(file.Data); err != nil {
		f.Close()
		return err
	}
	if fsync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// Rename moves the staged folder into place. It fails, and leaves both as they
// are, when the destination exists (unless it is an empty folder); the caller
// decides whether to Discard. It does not sync the parent folder (SyncDir).
func (s *Staged) Rename() error { return os.Rename(s.tmp, s.dir) }

// Discard removes the staged folder.
func (s *Staged) Discard() { os.RemoveAll(s.tmp) }

// Sync makes every staged file and folder durable: one syncfs(2) per parent
// folder on Linux (in practice one call for a whole batch), an fsync of each file
// and folder elsewhere.
func Sync(staged []*Staged) error { return syncStaged(staged) }

// CheckDirWritable reports, before any work, whether folders can be made in dir,
// which need not exist yet: its nearest existing ancestor must be a folder that a
// probe folder can be created in (and is removed from at once).
func CheckDirWritable(dir string) error {
	d := filepath.Clean(dir)
	for {
		st, err := os.Stat(d)
		if err == nil {
			if !st.IsDir() {
				return fmt.Errorf("%s is not a folder", d)
			}
			break
		}
		parent := filepath.Dir(d)
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) || parent == d {
			return err
		}
		d = parent
	}
	tmp, err := os.MkdirTemp(d, probePrefix)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("cannot create folders in %s: %w", d, err)
	}
	return os.Remove(tmp)
}
