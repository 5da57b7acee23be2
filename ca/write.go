package ca

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/meshpki/meshpki/internal/atomicfs"
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
	// writes many folders into one parent syncs it once itself (or uses a Batch).
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

// WriteDir writes files into the folder dir as one atomic step (package
// internal/atomicfs): the files go into a fresh 0700 temporary folder beside dir
// (keys 0600, the rest 0644), each fsynced, then the folder is renamed into place. An existing dir is refused unless
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
	all := make([]*atomicfs.Staged, len(b.staged))
	for i, s := range b.staged {
		all[i] = s.Staged
	}
	syncErr := atomicfs.Sync(all)
	parents := map[string]bool{}
	for _, s := range b.staged {
		if syncErr != nil {
			s.Discard()
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
		if err := atomicfs.SyncDir(p); err != nil {
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

// staged is a bundle folder written to a temporary folder, waiting to be renamed
// to its place.
type staged struct {
	*atomicfs.Staged
	dir string
}

func stage(dir string, files map[string][]byte, opts WriteOptions, fsync bool) (*staged, error) {
	dir = filepath.Clean(dir)
	if err := CheckWritable(dir, opts.Force); err != nil {
		return nil, err
	}
	out := make(map[string]atomicfs.File, len(files))
	for n, data := range files {
		perm := fs.FileMode(0o644)
		if IsKeyFile(n) {
			perm = 0o600
		}
		out[n] = atomicfs.File{Data: data, Perm: perm}
	}
	s, err := atomicfs.Stage(dir, out, fsync)
	if err != nil {
		return nil, err
	}
	return &staged{Staged: s, dir: dir}, nil
}

// commit renames the staged folder into place, backing up an existing one.
func (s *staged) commit(opts WriteOptions) (backup string, err error) {
	defer func() {
		if err != nil {
			s.Discard()
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
	if err := s.Rename(); err != nil {
		if backup != "" {
			if rerr := os.Rename(backup, s.dir); rerr != nil {
				return "", fmt.Errorf("%w; the previous bundle is at %s", err, backup)
			}
		}
		return "", err
	}
	if !opts.NoSyncParent {
		if err := atomicfs.SyncDir(filepath.Dir(s.dir)); err != nil {
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
