package ca

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// maxClusterLine is the longest cluster name (a Kubernetes label value); a longer
// line of a cluster list is reported by its length, never quoted.
const maxClusterLine = 63

// backupDirName matches the folder WriteDir keeps a replaced bundle (or CSR) folder
// in: <name>.bak-<UTC time>, with -N when several are kept within one second.
var backupDirName = regexp.MustCompile(`\.bak-[0-9]{8}T[0-9]{6}Z(-[0-9]+)?$`)

// IsBackupName reports whether a folder name is one WriteDir gives the backup of a
// replaced folder: such a folder is never a cluster's, and no cluster may be
// named like one.
func IsBackupName(name string) bool { return backupDirName.MatchString(name) }

// ReadClusterList reads a file of cluster names, one per line (see
// ParseClusterList).
func ReadClusterList(name string) ([]string, error) {
	data, err := ReadInputFile(name)
	if err != nil {
		return nil, err
	}
	return ParseClusterList(name, data)
}

// ParseClusterList reads one cluster name per line of data (from file name, for
// errors, which name the file and the line); blank lines and # comments are
// skipped. A line too long to be a name is reported by its length, not quoted.
func ParseClusterList(name string, data []byte) ([]string, error) {
	var out []string
	for line := 1; len(data) > 0; line++ {
		var text []byte
		text, data, _ = bytes.Cut(data, []byte("\n"))
		s, _, _ := strings.Cut(string(text), "#")
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if len(s) > maxClusterLine {
			return nil, fmt.Errorf("%s:%d: a line of %d bytes is no cluster name (at most 63 characters)", name, line, len(s))
		}
		if err := ValidateClusterName(s); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// CheckClusterNames checks a list of cluster names for one run: each valid, none
// twice, and no two that differ only in case (their folders would be one on a
// case-insensitive file system, as on macOS and Windows).
func CheckClusterNames(names []string) error {
	seen := map[string]string{} // lower case -> as given
	for _, n := range names {
		if err := ValidateClusterName(n); err != nil {
			return err
		}
		switch prev, dup := seen[strings.ToLower(n)]; {
		case dup && prev == n:
			return fmt.Errorf("%q given twice", n)
		case dup:
			return fmt.Errorf("%q and %q differ only in case: their bundle folders would be one on a case-insensitive file system (macOS, Windows)", prev, n)
		}
		seen[strings.ToLower(n)] = n
	}
	return nil
}
