package k8s

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshpki/meshpki/ca"
)

// Names, labels and defaults of the Secrets meshpki writes.
const (
	// SecretName is the Secret istiod reads its signing CA from.
	SecretName = "cacerts"
	// DefaultNamespace is istiod's namespace.
	DefaultNamespace = "istio-system"
	// BackupPrefix starts every backup Secret's name: cacerts-backup-<UTC time>.
	BackupPrefix = SecretName + "-backup-"
	// DefaultKeepBackups is how many backups of cacerts are kept per cluster.
	DefaultKeepBackups = 3

	// LabelManagedBy marks Secrets meshpki wrote.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedBy is LabelManagedBy's value.
	ManagedBy = "meshpki"
	// LabelBackupOf marks a backup and names the Secret it copies.
	LabelBackupOf = "meshpki.io/backup-of"
	// AnnotationBackupResourceVersion is the copied Secret's resourceVersion.
	AnnotationBackupResourceVersion = "meshpki.io/backup-of-resource-version"

	// backupTimeLayout is lower case only: Secret names are DNS subdomains.
	backupTimeLayout = "20060102-150405"
)

// ErrReservedKey means a bundle carries istiod's reserved key istio-generated.
var ErrReservedKey = errors.New(`key "` + ca.ReservedKey + `" is reserved for istiod's self-signed CA and is never written`)

// NewSecret builds the cacerts Secret holding files (file name -> content), without
// sending anything. It checks what the API server would refuse (a bad namespace, a key
// that is not a valid Secret key, more than 1 MiB of data) and refuses the reserved
// istio-generated key. The Secret is labelled as managed by meshpki. Errors name keys,
// never contents.
func NewSecret(namespace string, files map[string][]byte) (*corev1.Secret, error) {
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return nil, fmt.Errorf("namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	if len(files) == 0 {
		return nil, errors.New("no files to put in the Secret")
	}
	if _, ok := files[ca.ReservedKey]; ok {
		return nil, ErrReservedKey
	}
	size := 0
	data := make(map[string][]byte, len(files))
	for _, k := range slices.Sorted(maps.Keys(files)) {
		if errs := validation.IsConfigMapKey(k); len(errs) > 0 {
			return nil, fmt.Errorf("file %q cannot be a Secret key: %s", k, strings.Join(errs, "; "))
		}
		size += len(files[k])
		data[k] = bytes.Clone(files[k])
	}
	if size > corev1.MaxSecretSize {
		return nil, fmt.Errorf("bundle is %d bytes, more than a Secret holds (%d)", size, corev1.MaxSecretSize)
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      SecretName,
			Namespace: namespace,
			Labels:    map[string]string{LabelManagedBy: ManagedBy},
		},
		Type: corev1.SecretTypeOpaque,
		Data: data,
	}, nil
}

// BundleSecret builds the cacerts Secret for bundle b in format f (see NewSecret).
func BundleSecret(namespace string, b *ca.Bundle, f ca.Format) (*corev1.Secret, error) {
	files, err := b.Files(f)
	if err != nil {
		return nil, err
	}
	return NewSecret(namespace, files)
}

// SecretFiles returns a Secret's data as file name -> content, the form ca.Verify
// and ca.ParseBundle read. The result is a copy.
func SecretFiles(s *corev1.Secret) map[string][]byte {
	files := make(map[string][]byte, len(s.Data)+len(s.StringData))
	for k, v := range s.Data {
		files[k] = bytes.Clone(v)
	}
	for k, v := range s.StringData {
		files[k] = []byte(v)
	}
	return files
}

// BackupName is the name of a backup made at now; n > 0 tells apart backups made
// within one second.
func BackupName(now time.Time, n int) string {
	name := BackupPrefix + now.UTC().Format(backupTimeLayout)
	if n > 0 {
		name += fmt.Sprintf("-%d", n)
	}
	return name
}

// backupSeq splits a backup name into the name of its second (BackupName(t, 0))
// and its number within that second (n); ok is false for other names.
func backupSeq(name string) (second string, n int, ok bool) {
	end := len(BackupPrefix) + len(backupTimeLayout)
	if !strings.HasPrefix(name, BackupPrefix) || len(name) < end {
		return "", 0, false
	}
	second, rest := name[:end], name[end:]
	if rest == "" {
		return second, 0, true
	}
	n, err := strconv.Atoi(strings.TrimPrefix(rest, "-"))
	if err != nil || !strings.HasPrefix(rest, "-") || n <= 0 {
		return "", 0, false
	}
	return second, n, true
}

// compareBackupNames orders backup names by time, then by number within one
// second ("-2" before "-10"); other names sort as strings, after backup names.
func compareBackupNames(a, b string) int {
	sa, na, oka := backupSeq(a)
	sb, nb, okb := backupSeq(b)
	switch {
	case oka && okb:
		if c := strings.Compare(sa, sb); c != 0 {
			return c
		}
		return cmp.Compare(na, nb)
	case oka != okb:
		if oka {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// nextBackupSeq is the number for a new backup made at now, given the backups
// there: one above the highest of that second, so that a new backup never takes
// the name of one pruned meanwhile (which would sort it before the older ones of
// its second, and prune it first).
func nextBackupSeq(existing []string, now time.Time) int {
	second := BackupName(now, 0)
	next := 0
	for _, name := range existing {
		if s, n, ok := backupSeq(name); ok && s == second && n >= next {
			next = n + 1
		}
	}
	return next
}

// NewBackup builds a copy of old named BackupName(now, n): same type and data,
// labelled as a backup of old, annotated with old's resourceVersion.
func NewBackup(old *corev1.Secret, now time.Time, n int) *corev1.Secret {
	labels := map[string]string{}
	for k, v := range old.Labels {
		labels[k] = v
	}
	labels[LabelManagedBy] = ManagedBy
	labels[LabelBackupOf] = old.Name
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        BackupName(now, n),
			Namespace:   old.Namespace,
			Labels:      labels,
			Annotations: map[string]string{AnnotationBackupResourceVersion: old.ResourceVersion},
		},
		Type: old.Type,
		Data: SecretFiles(old),
	}
}

// ChangedFiles lists, sorted, the file names whose content differs between two
// Secrets' data (added, removed or changed). It never returns contents, so it is
// safe to print even for key files.
func ChangedFiles(before, after map[string][]byte) []string {
	var out []string
	for k, v := range after {
		if old, ok := before[k]; !ok || !bytes.Equal(old, v) {
			out = append(out, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// GetCACerts reads Secret cacerts in namespace ns of cl. A missing Secret is an
// error for which apierrors.IsNotFound holds; every error names the cluster, and an
// RBAC refusal is a ForbiddenError.
func GetCACerts(ctx context.Context, cl *Cluster, ns string) (*corev1.Secret, error) {
	s, err := cl.Client.CoreV1().Secrets(ns).Get(ctx, SecretName, metav1.GetOptions{})
	if err != nil {
		return nil, apiError(cl.Name, "get", "secrets", ns, err)
	}
	return s, nil
}

// AnnotateCACerts sets annotation key to value on cacerts, provided its data is
// still files (what a step wrote, or read): it reads cacerts and updates it with
// that resourceVersion as precondition, and on a conflict reads and checks again.
// It needs only the get and update that Install needs, and returns the new
// resourceVersion.
func AnnotateCACerts(ctx context.Context, cl *Cluster, ns string, files map[string][]byte, key, value string) (string, error) {
	secrets := cl.Client.CoreV1().Secrets(ns)
	for range 5 {
		cur, err := secrets.Get(ctx, SecretName, metav1.GetOptions{})
		if err != nil {
			return "", apiError(cl.Name, "get", "secrets", ns, err)
		}
		if changed := ChangedFiles(SecretFiles(cur), files); len(changed) > 0 {
			return "", fmt.Errorf("%s in namespace %s was changed by someone else meanwhile (files %s): rerun to see where it stands",
				SecretName, ns, strings.Join(changed, ", "))
		}
		upd := cur.DeepCopy()
		if upd.Annotations == nil {
			upd.Annotations = map[string]string{}
		}
		upd.Annotations[key] = value
		out, err := secrets.Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager})
		if err == nil {
			return out.ResourceVersion, nil
		}
		if !apierrors.IsConflict(err) {
			return "", apiError(cl.Name, "update", "secrets", ns, err)
		}
	}
	return "", fmt.Errorf("%s in namespace %s keeps changing under us", SecretName, ns)
}
