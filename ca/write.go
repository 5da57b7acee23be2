package ca

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// ErrExists means a bundle folder is already there and overwriting was not asked for.
var ErrExists = errors.New("already exists")

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
	tmp, err := os.MkdirTemp(d, ".meshpki-probe-")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("cannot create folders in %s: %w", d, err)
	}
	return os.Remove(tmp)
}

// WriteDir writes files into the folder dir as one atomic step: the files go into a
// fresh 0700 temporary folder beside dir (keys 0600, the rest 0644), each fsynced,
// then the folder is renamed into place. An existing dir is refused unless
// opts.Force, and then renamed to dir.bak-<UTC time> first, so nothing is lost. It
// returns the backup's path, if one was made. Errors name paths, never contents.
func WriteDir(dir string, files map[string][]byte, opts WriteOptions) (backup string, err error) {
	s, err := stage(dir, files, opts, true)
	if err != nil {
		return "", err
	}
	return s.commit(opts)
}

// Batch writes many bundle folders with WriteDir's guarantees but far fewer
// fsyncs: Stage writes each folder's files to a temporary folder without syncing
// them; Commit syncs the file system once (syncfs on Linux), renames every staged
// folder into place (backing up existing ones when forced), and syncs each parent
// folder once. A crash before Commit's renames leaves only temporary folders; no
// bundle folder is ever seen half-written. Stage is safe for concurrent use.
type Batch struct {
	opts   WriteOptions
	mu     sync.Mutex
	staged []*staged
}

// NewBatch starts a batch of folder writes.
func NewBatch(opts WriteOptions) *Batch { return &Batch{opts: opts} }

// Stage writes files into a temporary folder that Commit will rename to dir.
func (b *Batch) Stage(dir string, files map[string][]byte) error {
	s, err := stage(dir, files, b.opts, false)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.staged = append(b.staged, s)
	b.mu.Unlock()
	return nil
}

// Commit makes every staged folder durable and visible. It returns, per folder,
// the backup made (if any) and the error (if any); one folder's failure does not
// stop the others.
func (b *Batch) Commit() (backups map[string]string, errs map[string]error) {
	backups, errs = map[string]string{}, map[string]error{}
	if len(b.staged) == 0 {
		return backups, errs
	}
	syncErr := syncFilesystem(b.staged)
	parents := map[string]bool{}
	for _, s := range b.staged {
		if syncErr != nil {
			os.RemoveAll(s.tmp)
			errs[s.dir] = syncErr
			continue
		}
		bk, err := s.commit(WriteOptions{Force: b.opts.Force, Now: b.opts.Now, NoSyncParent: true})
		if err != nil {
			errs[s.dir] = err
			continue
		}
		if bk != "" {
			backups[s.dir] = bk
		}
		parents[filepath.Dir(s.dir)] = true
	}
	for p := range parents {
		if err := SyncDir(p); err != nil {
			for _, s := range b.staged {
				if filepath.Dir(s.dir) == p && errs[s.dir] == nil {
					errs[s.dir] = err
				}
			}
		}
	}
	b.staged = nil
	return backups, errs
}

// staged is a bundle folder written to tmp, waiting to be renamed to dir.
type staged struct {
	dir, tmp string
	files    []string // full paths, for platforms without syncfs
}

func stage(dir string, files map[string][]byte, opts WriteOptions, fsync bool) (s *staged, err error) {
	dir = filepath.Clean(dir)
	parent := filepath.Dir(dir)
	if err := CheckWritable(dir, opts.Force); err != nil {
		return nil, err
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
	s = &staged{dir: dir, tmp: tmp}
	for _, n := range slices.Sorted(maps.Keys(files)) {
		if n != filepath.Base(n) || n == "." || n == ".." {
			return nil, fmt.Errorf("bad file name %q", n)
		}
		perm := fs.FileMode(0o644)
		if KeyFiles[n] {
			perm = 0o600
		}
		name := filepath.Join(tmp, n)
		if err := writeNewFile(name, files[n], perm, fsync); err != nil {
			return nil, err
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

// commit renames the staged folder into place, backing up an existing one.
func (s *staged) commit(opts WriteOptions) (backup string, err error) {
	defer func() {
		if err != nil {
			os.RemoveAll(s.tmp)
		}
	}()
	if _, statErr := os.Lstat(s.dir); statErr == nil {
		if !opts.Force { // appeared since the check
			return "", fmt.Errorf("%s: %w", s.dir, ErrExists)
		}
		backup, err = backupName(s.dir, opts.Now)
		if err != nil {
			return "", err
		}
		if err := os.Rename(s.dir, backup); err != nil {
			return "", err
		}
	}
	if err := os.Rename(s.tmp, s.dir); err != nil {
		if backup != "" {
			if rerr := os.Rename(backup, s.dir); rerr != nil {
				return "", fmt.Errorf("%w; the previous bundle is at %s", err, backup)
			}
		}
		return "", err
	}
	if !opts.NoSyncParent {
		if err := SyncDir(filepath.Dir(s.dir)); err != nil {
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
		return "", err
	}
	return f.Name(), nil
}

func writeNewFile(name string, data []byte, perm fs.FileMode, fsync bool) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
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

// bundleFileNames are the files istiod reads from a cacerts bundle.
var bundleFileNames = map[string]bool{CACertFile: true, CAKeyFile: true, CertChainFile: true, RootCertFile: true,
	TLSCertFile: true, TLSKeyFile: true, TLSCAFile: true, "ca-crl.pem": true, ReservedKey: true}

// ReadDir reads a bundle folder into file name -> content: its regular files and
// symbolic links to regular files (a mounted Secret is KEY -> ..data/KEY), each as
// ReadInputFile reads them. Hidden entries, sub-folders and links to folders are
// skipped, and so are other odd entries, unless they bear a bundle file's name: a
// ca-cert.pem that is a FIFO or a device, or a dangling link, is an error naming it.
func ReadDir(dir string) (map[string][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for _, e := range entries {
		name := e.Name()
		if name[0] == '.' || e.IsDir() {
			continue
		}
		path := filepath.Join(dir, name)
		mode := e.Type()
		if mode&fs.ModeSymlink != 0 {
			st, err := os.Stat(path)
			switch {
			case err != nil && bundleFileNames[name]:
				return nil, fmt.Errorf("%s is a symbolic link that cannot be followed: %w", path, err)
			case err != nil || st.IsDir():
				continue
			}
			mode = st.Mode().Type()
		}
		if !mode.IsRegular() && !bundleFileNames[name] {
			continue
		}
		b, err := ReadInputFile(path)
		if err != nil {
			return nil, err
		}
		files[name] = b
	}
	return files, nil
}
