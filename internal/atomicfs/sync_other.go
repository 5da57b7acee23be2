//go:build !linux

package atomicfs

import (
	"fmt"
	"os"
)

// syncStaged fsyncs every staged file and folder, where syncfs(2) is missing.
func syncStaged(st []*Staged) error {
	for _, s := range st {
		for _, name := range s.files {
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			err = f.Sync()
			f.Close()
			if err != nil {
				return fmt.Errorf("sync %s: %w", name, err)
			}
		}
		if err := SyncDir(s.tmp); err != nil {
			return err
		}
	}
	return nil
}
