package atomicfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// DirLock is an exclusive lock on a folder that processes write into. While it is
// held no other process that takes it writes there, so any temporary folder in it
// was left by a run that died (kill -9, a crash, a power cut).
type DirLock struct {
	f *os.File
}

// LockDir locks dir, which must exist, waiting while another process holds it
// (calling waiting once, if not nil) until ctx is done.
func LockDir(ctx context.Context, dir string, waiting func()) (*DirLock, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	for said := false; ; {
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		if ok {
			return &DirLock{f: f}, nil
		}
		if !said && waiting != nil {
			waiting()
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for another meshpki run writing into %s: %w", dir, context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Unlock releases the lock.
func (l *DirLock) Unlock() {
	if l != nil && l.f != nil {
		l.f.Close() // closing the descriptor releases the flock
		l.f = nil
	}
}

// RemoveOrphans removes the temporary folders interrupted runs left in dir (see
// IsTemp). Call it only with dir locked (LockDir), so that no live run's folder is
// taken for an orphan. On systems without folder locks (SupportsDirLock false) it
// removes nothing and returns what it found. It returns the folders' names, sorted.
func RemoveOrphans(dir string) (removed []string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	for _, e := range entries {
		if !e.IsDir() || !IsTemp(e.Name()) {
			continue
		}
		if supportsDirLock {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return removed, err
			}
		}
		removed = append(removed, e.Name())
	}
	slices.Sort(removed)
	return removed, nil
}

// SupportsDirLock reports whether LockDir excludes other processes on this
// system, and so whether RemoveOrphans removes what it finds.
func SupportsDirLock() bool { return supportsDirLock }
