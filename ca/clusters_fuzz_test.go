package ca_test

import (
	"strings"
	"testing"

	"github.com/meshpki/meshpki/ca"
)

// FuzzParseClusterList: a cluster list never panics, every name it returns is a
// valid cluster name found on a line of the input, and errors name the file and a
// line without quoting more than a cluster name's worth of it.
func FuzzParseClusterList(f *testing.F) {
	for _, s := range []string{"east\nwest\n", "# comment\n\neast # primary\r\nwest", "a\n" + strings.Repeat("x", 300), "../x\n", "\xef\xbb\xbfeast"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		names, err := ca.ParseClusterList("clusters.txt", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "clusters.txt:") {
				t.Fatalf("error does not name file and line: %v", err)
			}
			if len(err.Error()) > 600 {
				t.Fatalf("error is %d bytes long", len(err.Error()))
			}
			return
		}
		for _, n := range names {
			if err := ca.ValidateClusterName(n); err != nil {
				t.Fatalf("returned invalid name %q: %v", n, err)
			}
			if !strings.Contains(string(data), n) {
				t.Fatalf("returned %q, not in the input", n)
			}
		}
	})
}
