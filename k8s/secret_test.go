package k8s

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
)

func TestNewSecretRoundTrip(t *testing.T) {
	b, files := mint(t, nil, "east")
	s, err := NewSecret("istio-system", files)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != SecretName || s.Namespace != "istio-system" || s.Type != corev1.SecretTypeOpaque || s.Labels[LabelManagedBy] != ManagedBy {
		t.Fatalf("secret meta %+v type %s", s.ObjectMeta, s.Type)
	}
	back := SecretFiles(s)
	if !maps.EqualFunc(back, files, bytes.Equal) {
		t.Fatal("files -> Secret -> files changed the data")
	}
	got, _, err := ca.ParseBundle(back, ca.VerifyOptions{})
	if err != nil || !got.Cert.Equal(b.Cert) {
		t.Fatalf("bundle from Secret: %v", err)
	}
	// The Secret holds copies: changing the caller's files later changes nothing.
	files[ca.CACertFile][0] ^= 0xff
	if bytes.Equal(s.Data[ca.CACertFile], files[ca.CACertFile]) {
		t.Fatal("NewSecret aliases the caller's bytes")
	}
	tlsSecret, err := BundleSecret("istio-system", b, ca.FormatTLS)
	if err != nil {
		t.Fatal(err)
	}
	if len(tlsSecret.Data) != 3 || tlsSecret.Data[ca.TLSKeyFile] == nil {
		t.Fatalf("tls layout keys %v", maps.Keys(tlsSecret.Data))
	}
	if _, _, err := ca.ParseBundle(SecretFiles(tlsSecret), ca.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestNewSecretRefuses(t *testing.T) {
	_, files := mint(t, nil, "east")
	with := func(k string, v []byte) map[string][]byte {
		f := maps.Clone(files)
		f[k] = v
		return f
	}
	for _, tc := range []struct {
		name, ns string
		files    map[string][]byte
		want     string
	}{
		{"reserved key", "istio-system", with(ca.ReservedKey, []byte("true")), ca.ReservedKey},
		{"bad key", "istio-system", with("a/b", []byte("x")), `"a/b" cannot be a Secret key`},
		{"bad namespace", "Istio_System", files, `namespace "Istio_System"`},
		{"too big", "istio-system", with("big", make([]byte, corev1.MaxSecretSize)), "more than a Secret holds"},
		{"empty", "istio-system", nil, "no files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSecret(tc.ns, tc.files)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			noKeyMaterial(t, "error", err.Error())
		})
	}
	if _, err := NewSecret("istio-system", with(ca.ReservedKey, nil)); !errors.Is(err, ErrReservedKey) {
		t.Fatalf("got %v, want ErrReservedKey", err)
	}
}

func TestBackupNamesSortByTime(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 7, 41, 27, 0, time.FixedZone("CET", 3600))
	names := []string{BackupName(t0, 0), BackupName(t0, 1), BackupName(t0, 9), BackupName(t0.Add(time.Second), 0), BackupName(t0.Add(time.Hour), 0)}
	if names[0] != "cacerts-backup-20261126-064127" {
		t.Fatalf("name %s, want UTC time", names[0])
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Fatalf("%s sorts after %s", names[i-1], names[i])
		}
	}
	old := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: SecretName, Namespace: "ns", ResourceVersion: "42", Labels: map[string]string{"team": "mesh"}},
		Type: "Opaque", Data: map[string][]byte{"a": []byte("1")}}
	b := NewBackup(old, t0, 2)
	if b.Name != "cacerts-backup-20261126-064127-2" || b.Namespace != "ns" || b.Labels["team"] != "mesh" || b.Labels[LabelBackupOf] != SecretName ||
		b.Annotations[AnnotationBackupResourceVersion] != "42" || string(b.Data["a"]) != "1" || b.ResourceVersion != "" {
		t.Fatalf("backup %+v", b)
	}
	if old.Labels[LabelBackupOf] != "" {
		t.Fatal("NewBackup changed the original's labels")
	}
}

// Backups made within one second sort by their number ("-2" before "-10"), and a
// new one takes the number above the highest there, not one freed by pruning.
func TestBackupSequence(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 11, 56, 21, 0, time.UTC)
	names := []string{BackupName(t0, 0), BackupName(t0, 2), BackupName(t0, 10), BackupName(t0.Add(time.Second), 0), BackupName(t0.Add(time.Second), 1), "cacerts-backup-other"}
	shuffled := slices.Clone(names)
	slices.Reverse(shuffled)
	slices.SortFunc(shuffled, compareBackupNames)
	if !slices.Equal(shuffled, names) {
		t.Errorf("sorted %v, want %v", shuffled, names)
	}
	for _, c := range []struct {
		existing []string
		want     int
	}{
		{nil, 0},
		{[]string{BackupName(t0.Add(-time.Second), 4)}, 0},
		{[]string{BackupName(t0, 0)}, 1},
		// n=0 was pruned: the next is 4, not 0, which would sort first and be
		// pruned at once.
		{[]string{BackupName(t0, 1), BackupName(t0, 2), BackupName(t0, 3)}, 4},
		{[]string{BackupName(t0, 9), "cacerts-backup-20261203-115621-x"}, 10},
	} {
		if got := nextBackupSeq(c.existing, t0); got != c.want {
			t.Errorf("nextBackupSeq(%v) = %d, want %d", c.existing, got, c.want)
		}
	}
}

func TestChangedFiles(t *testing.T) {
	before := map[string][]byte{"a": []byte("1"), "b": []byte("2"), "c": []byte("3")}
	after := map[string][]byte{"a": []byte("1"), "b": []byte("x"), "d": []byte("4")}
	if got := fmt.Sprint(ChangedFiles(before, after)); got != "[b c d]" {
		t.Fatalf("got %s", got)
	}
	if got := ChangedFiles(before, maps.Clone(before)); len(got) != 0 {
		t.Fatalf("got %v for equal data", got)
	}
}
