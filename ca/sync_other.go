//go:build !linux

package ca

import "os"

// syncFilesystem fsyncs every staged file and folder, where syncfs(2) is missing.
func syncFilesystem(st []*staged) error {
	for _, s := range st {
		for _, name := range s.files {
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			err = f.Sync()
			f.Close()
			if err != nil {
				return err
			}
		}
		if err := SyncDir(s.tmp); err != nil {
			return err
		}
	}
	return nil
}
