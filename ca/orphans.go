package ca

import (
	"context"

	"github.com/meshpki/meshpki/internal/atomicfs"
)

// DirLock is an exclusive lock on a folder that bundle folders are written into.
// While it is held no other meshpki run writes there, so any temporary folder in it
// was left by a run that died (kill -9, a crash, a power cut).
type DirLock struct {
	l *atomicfs.DirLock
}

// LockDir locks dir, which must exist, waiting while another process holds it
// (logging once through waiting, if not nil) until ctx is done.
func LockDir(ctx context.Context, dir string, waiting func()) (*DirLock, error) {
	l, err := atomicfs.LockDir(ctx, dir, waiting)
	if err != nil {
		return nil, err
	}
	return &DirLock{l: l}, nil
}

// Unlock releases the lock.
func (l *DirLock) Unlock() {
	if l != nil {
		l.l.Unlock()
	}
}

// RemoveOrphans removes the temporary folders interrupted runs left in dir, each of
// which may hold a complete intermediate CA key under the mesh root. Call it only
// with dir locked (LockDir), so that no live run's folder is taken for an orphan.
// On systems without folder locks (SupportsDirLock false) it removes nothing and
// returns what it found. It returns the folders' names, sorted.
func RemoveOrphans(dir string) (removed []string, err error) { return atomicfs.RemoveOrphans(dir) }

// SupportsDirLock reports whether RemoveOrphans removes what it finds.
func SupportsDirLock() bool { return atomicfs.SupportsDirLock() }

// CheckDirWritable reports, before any work, whether bundle folders can be made in
// dir, which need not exist yet: its nearest existing ancestor must be a folder that
// a probe folder can be created in (and is removed from at once).
func CheckDirWritable(dir string) error { return atomicfs.CheckDirWritable(dir) }
