package ca

import (
	"fmt"
	"path/filepath"
	"strings"
)

// ReadBundleSet reads one bundle folder per cluster, dir/<cluster>/ (as MintDir
// writes them), for installing a mesh. A missing or unreadable folder fails that
// cluster alone (errs[i], wrapping fs.ErrNotExist when it is missing); bundles that
// verify but trust different roots are refused as a whole (ErrRootsDiffer): a mesh
// needs one root.
func ReadBundleSet(dir string, clusters []string, opts VerifyOptions) (files []map[string][]byte, errs []error, err error) {
	files = make([]map[string][]byte, len(clusters))
	errs = make([]error, len(clusters))
	var names []string
	var reps []*Report
	for i, cl := range clusters {
		f, err := ReadDir(filepath.Join(dir, cl))
		if err != nil {
			errs[i] = fmt.Errorf("cluster %s: %w", cl, err)
			continue
		}
		files[i] = f
		if rep := Verify(f, opts); rep.OK() {
			names, reps = append(names, cl), append(reps, rep)
		}
	}
	if p := SameRoots(names, reps); p != nil {
		return nil, nil, fmt.Errorf("bundles in %s: %w%s", dir, ErrRootsDiffer, strings.TrimPrefix(p.Message, ErrRootsDiffer.Error()))
	}
	return files, errs, nil
}
