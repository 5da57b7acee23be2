//go:build unix

package atomicfs

import (
	"errors"
	"os"
	"syscall"
)

const supportsDirLock = true

// tryLock takes an exclusive flock on f without waiting; false means another
// process holds it.
func tryLock(f *os.File) (bool, error) {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, err
}
