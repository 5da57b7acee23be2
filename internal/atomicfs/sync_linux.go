package atomicfs

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// syncStaged makes every staged file and folder durable with one syncfs(2) per
// parent folder (in practice one call), instead of one fsync per file and folder.
func syncStaged(st []*Staged) error {
	done := map[string]bool{}
	for _, s := range st {
		parent := filepath.Dir(s.tmp)
		if done[parent] {
			continue
		}
		done[parent] = true
		fd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("sync %s: %w", parent, err)
		}
		err = unix.Syncfs(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("syncfs %s: %w", parent, err)
		}
	}
	return nil
}
