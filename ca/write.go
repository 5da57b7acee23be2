package ca

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// ErrExists means a bundle folder is already there and overwriting was not asked for.
var ErrExists = errors.New("already exists (pass --force to replace it; the old one is kept as a backup)")

// WriteOptions controls WriteDir.
type WriteOptions struct {
	// Force replaces an existing folder, which is first renamed to a backup.
	Force bool
	// Now stamps the backup's name; zero means time.Now().
	Now time.Time
	// NoSyncParent skips the fsync of dir's parent after the rename; a caller that
	// writes many folders into one parent syncs it once with SyncDir instead.
	NoSyncParent bool
}

// CheckWritable reports ErrExists if dir exists and force is false: a pre-flight
// check so that a run writing many folders fails before it writes any.
func CheckWritable(dir string, force bool) error {
	if _, err := os.Lstat(dir); err == nil && !force {
		return fmt.Errorf("%s: %w", dir, ErrExists)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// WriteDir writes files into the folder dir as one atomic step: the files go into a
// fresh 0700 temporary folder beside dir (keys 0600, the rest 0644), each fsynced,
// then the folder is renamed into place. An existing dir is refused unless
// opts.Force, and then renamed to dir.bak-<UTC time> first, so nothing is lost. It
// returns the backup's path, if one was made. Errors name paths, never contents.
func WriteDir(dir string, files map[string][]byte, opts WriteOptions) (backup string, err error) {
	dir = filepath.Clean(dir)
	parent := filepath.Dir(dir)
	if err := CheckWritable(dir, opts.Force); err != nil {
		return "", err
	}
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if n != filepath.Base(n) || n == "." || n == ".." {
			return "", fmt.Errorf("bad file name %q", n)
		}
		perm := fs.FileMode(0o644)
		if KeyFiles[n] {
			perm = 0o600
		}
		if err := writeFileSync(filepath.Join(tmp, n), files[n], perm); err != nil {
			return "", err
		}
	}
	if err := SyncDir(tmp); err != nil {
		return "", err
	}
	if _, statErr := os.Lstat(dir); statErr == nil {
		if !opts.Force { // appeared since the check
			return "", fmt.Errorf("%s: %w", dir, ErrExists)
		}
		backup, err = backupName(dir, opts.Now)
		if err != nil {
			return "", err
		}
		if err := os.Rename(dir, backup); err != nil {
			return "", err
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if backup != "" {
			if rerr := os.Rename(backup, dir); rerr != nil {
				return "", fmt.Errorf("%w; the previous bundle is at %s", err, backup)
			}
		}
		return "", err
	}
	if !opts.NoSyncParent {
		if err := SyncDir(parent); err != nil {
			return backup, err
		}
	}
	return backup, nil
}

func backupName(dir string, now time.Time) (string, error) {
	if now.IsZero() {
		now = time.Now()
	}
	base := dir + ".bak-" + now.UTC().Format("20060102T150405Z")
	name := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			return name, nil
		} else if err != nil {
			return "", err
		}
		name = fmt.Sprintf("%s-%d", base, i)
	}
}

// WriteFile writes one file atomically: a temporary file in the same folder,
// fsynced, renamed over name, and the folder fsynced.
func WriteFile(name string, data []byte, perm fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		return err
	}
	ok = true
	return SyncDir(filepath.Dir(name))
}

func writeFileSync(name string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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

// ReadDir reads every regular file of a bundle folder into file name -> content,
// skipping sub-folders and hidden files.
func ReadDir(dir string) (map[string][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name()[0] == '.' {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		files[e.Name()] = b
	}
	return files, nil
}
