package k8s

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/textfmt"
)

// Action is what Install did (or, in a dry run, would do) to cacerts.
type Action string

// Actions.
const (
	ActionCreated   Action = "created"
	ActionUpdated   Action = "updated"
	ActionUnchanged Action = "unchanged"
)

// WarningIstiodSelfSigned is Install's warning when istiod signs with its own
// self-signed CA and InstallOptions.RestartIstiod is off.
const WarningIstiodSelfSigned = "istiod signs with its own self-signed CA (" + SelfSignedSecret + "): it does not switch to cacerts until it is restarted (kubectl rollout restart deployment/istiod)"

// FieldManager is the name meshpki's writes are recorded under.
const FieldManager = "meshpki"

// IstiodSelector selects istiod's Deployments, revisioned ones included.
const IstiodSelector = "app=istiod"

// RestartedAtAnnotation is the pod template annotation kubectl rollout restart sets.
const RestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// Errors Install refuses with.
var (
	// ErrRootChanged means the bundle trusts other roots than the installed cacerts:
	// a root change belongs to a root rotation, which keeps both roots for a while.
	ErrRootChanged = errors.New("bundle's roots differ from the roots already installed")
	// ErrSecretExists means cacerts exists and InstallOptions.CreateOnly was set.
	ErrSecretExists = errors.New("cacerts already exists")
	// ErrBundle means the bundle failed verification and nothing was sent.
	ErrBundle = errors.New("bundle does not verify")
)

// InstallOptions controls Install.
type InstallOptions struct {
	// Namespace holds cacerts; empty means DefaultNamespace.
	Namespace string
	// DryRun sends every write as a server-side dry run: the API server validates
	// and authorizes it, and nothing is stored.
	DryRun bool
	// AllowNewRoot installs a bundle whose roots differ from the installed ones.
	AllowNewRoot bool
	// CreateOnly refuses (ErrSecretExists) when cacerts exists already.
	CreateOnly bool
	// RestartIstiod restarts istiod's Deployments (as kubectl rollout restart does)
	// when cacerts was created or updated: Istio before 1.19, and a switch from
	// istiod's self-signed CA, need it.
	RestartIstiod bool
	// KeepBackups is how many cacerts-backup-* Secrets to keep; zero means
	// DefaultKeepBackups, negative keeps all.
	KeepBackups int
	// Verify tunes the bundle checks.
	Verify ca.VerifyOptions
	// Now stamps backups and restarts; nil means time.Now.
	Now func() time.Time
	// CRLTTL is the life of the CRL signed for a new CA in a cluster that has CRLs
	// (see keepCRLs); 0 means ca.DefaultCRLTTL.
	CRLTTL time.Duration
	// Lock, when set, is the per-cluster Lease (the one Rotate takes) held while
	// cacerts is written, so that an install and a rotation never interleave. It is
	// taken only when cacerts is to change; in a dry run its holder is only read.
	// Namespace defaults to the install's. Rotate and RotateRoot hold the Lease
	// themselves and call Install without one.
	Lock *LeaseOptions

	// beforeWrite, for tests, runs after the read and before the create or update.
	beforeWrite func(ctx context.Context, attempt int) error
	// Rebase, when set, makes the files to write from the installed ones at each
	// attempt (under the Lease, after every re-read), instead of taking the files
	// given: a change of only some files (SyncCRLs: ca-crl.pem) then never undoes
	// what another writer changed meanwhile. A missing cacerts is not created.
	Rebase func(installed map[string][]byte) (map[string][]byte, error)
}

// ErrSecretGone means cacerts was deleted while a change of some of its files
// was being made: it is not created again from what was read before.
var ErrSecretGone = errors.New("cacerts was deleted meanwhile: not written again")

func (o InstallOptions) namespace() string {
	if o.Namespace == "" {
		return DefaultNamespace
	}
	return o.Namespace
}

func (o InstallOptions) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// InstallResult says what Install did in one cluster. It never holds key material.
type InstallResult struct {
	Cluster   string `json:"cluster"`
	Namespace string `json:"namespace"`
	Action    Action `json:"action,omitempty"`
	DryRun    bool   `json:"dryRun,omitempty"`
	// NamespaceCreated: the namespace did not exist and was (or would be) created.
	NamespaceCreated bool `json:"namespaceCreated,omitempty"`
	// Before describes the cacerts found in the cluster, nil if there was none.
	Before *ca.Report `json:"before,omitempty"`
	// After describes the bundle installed.
	After *ca.Report `json:"after,omitempty"`
	// ChangedFiles names the keys whose content changed (names only).
	ChangedFiles []string `json:"changedFiles,omitempty"`
	// Backup names the Secret the previous cacerts was copied to.
	Backup string `json:"backup,omitempty"`
	// PrunedBackups are older backups deleted to keep KeepBackups.
	PrunedBackups []string `json:"prunedBackups,omitempty"`
	// ResourceVersion is cacerts' resourceVersion after the install.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Attempts counts reads of cacerts: more than 1 means a concurrent writer
	// changed it between read and write, and Install decided again.
	Attempts int `json:"attempts"`
	// IstiodRestarted names the Deployments restarted (or that would be).
	IstiodRestarted []string `json:"istiodRestarted,omitempty"`
	// IstiodSelfSigned: istiod was found signing with its own self-signed CA, so it
	// takes cacerts only once restarted.
	IstiodSelfSigned bool `json:"istiodSelfSigned,omitempty"`
	// LockedBy is the holder of the Lease that kept this install out (or, in a dry
	// run, that holds it now).
	LockedBy string   `json:"lockedBy,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// Install installs files (a bundle as ca.ReadDir or ca.Bundle.Files return it) as
// cacerts in cluster cl:
//
//   - the bundle is verified first; a bundle that fails is never sent;
//   - the namespace is created if it is missing;
//   - cacerts is read; if its data equals the bundle nothing is written
//     (ActionUnchanged);
//   - a bundle whose roots differ from those of the installed cacerts is refused
//     unless AllowNewRoot;
//   - the installed cacerts is copied to a backup Secret (cacerts-backup-<UTC time>)
//     and then updated with its resourceVersion as precondition, or created; if
//     another writer got there first, Install reads again and decides again;
//   - old backups beyond KeepBackups are deleted.
//
// With opts.Lock, the writes happen under the cluster's Lease (see AcquireLease).
//
// The result is returned even with an error, as far as Install got. Errors name the
// cluster; RBAC refusals are *ForbiddenError.
func Install(ctx context.Context, cl *Cluster, files map[string][]byte, opts InstallOptions) (*InstallResult, error) {
	ns := opts.namespace()
	res := &InstallResult{Cluster: cl.Name, Namespace: ns, DryRun: opts.DryRun}
	in := &installer{cl: cl, opts: opts, ns: ns, res: res, now: opts.now()}
	if err := in.want(files); err != nil {
		return res, err
	}
	if opts.Lock != nil {
		lctx, release, err := in.lock(ctx)
		if err != nil {
			return res, err
		}
		defer release()
		ctx = lctx
	}
	err := retry.OnError(retry.DefaultRetry, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, func() error {
		res.Attempts++
		return in.attempt(ctx)
	})
	if err != nil {
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			err = fmt.Errorf("cluster %s: gave up after %d attempts, cacerts in namespace %s keeps changing under us: %w", cl.Name, res.Attempts, ns, err)
		}
		return res, LeaseCause(ctx, err)
	}
	if res.Backup != "" && !opts.DryRun && opts.KeepBackups >= 0 {
		keep := opts.KeepBackups
		if keep == 0 {
			keep = DefaultKeepBackups
		}
		pruned, err := PruneBackups(ctx, cl, ns, keep)
		res.PrunedBackups = pruned
		if err != nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("pruning old backups: %v", err))
		}
	}
	// istiod that started before cacerts existed signs with its own self-signed CA and
	// does not switch on its own (pilot/pkg/bootstrap/istio_ca.go reads cacerts only
	// at start): a restart is needed even when cacerts itself is unchanged.
	ownCA, err := istiodOnOwnCA(ctx, cl, ns)
	if err != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("could not tell which CA istiod uses: %v", err))
	}
	if ownCA {
		res.IstiodSelfSigned = true
		if !opts.RestartIstiod {
			res.Warnings = append(res.Warnings, WarningIstiodSelfSigned)
		}
	}
	if opts.RestartIstiod && (res.Action != ActionUnchanged || ownCA) {
		restarted, err := RestartIstiod(ctx, cl, ns, in.now, opts.DryRun)
		res.IstiodRestarted = restarted
		if err != nil {
			return res, err
		}
		if len(restarted) == 0 {
			res.Warnings = append(res.Warnings, fmt.Sprintf("no istiod Deployment (%s) in namespace %s: nothing restarted", IstiodSelector, ns))
		}
	}
	return res, nil
}

type installer struct {
	cl      *Cluster
	opts    InstallOptions
	ns      string
	res     *InstallResult
	desired *corev1.Secret
	bundle  *ca.Bundle // desired, parsed
	now     time.Time
	// lockWarnings are the Lease's warnings, kept across attempts.
	lockWarnings []string
}

// lock takes opts.Lock for the install, unless cacerts already holds the bundle
// (nothing will be written) or this is a dry run (the holder is only reported). It
// returns the context to write under and the release to defer.
func (in *installer) lock(ctx context.Context) (context.Context, func(), error) {
	noop := func() {}
	lock := *in.opts.Lock
	if lock.Namespace == "" {
		lock.Namespace = in.ns
	}
	if in.opts.DryRun {
		holder, until, err := LeaseHolder(ctx, in.cl, lock)
		switch {
		case err != nil:
			in.lockWarnings = append(in.lockWarnings, fmt.Sprintf("could not read the lock: %v", err))
		case holder != "":
			in.res.LockedBy = holder
			in.lockWarnings = append(in.lockWarnings, fmt.Sprintf("locked by %s until %s: a run now would wait for it", holder, until.UTC().Format(time.RFC3339)))
		}
		return ctx, noop, nil
	}
	cur, err := in.cl.Client.CoreV1().Secrets(in.ns).Get(ctx, SecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, nil, apiError(in.cl.Name, "get", "secrets", in.ns, err)
	case !in.opts.CreateOnly && in.unchanged(SecretFiles(cur)):
		return ctx, noop, nil // unchanged: nothing to lock for
	}
	lease, err := AcquireLease(ctx, in.cl, lock)
	if err != nil {
		var le *LockedError
		if errors.As(err, &le) {
			in.res.LockedBy = le.Holder
		}
		return nil, nil, err
	}
	if w := lease.TakeoverWarning(); w != "" {
		in.lockWarnings = append(in.lockWarnings, w)
	}
	return lease.Context(), func() {
		if w := lease.ReleaseWarning(ctx); w != "" {
			in.res.Warnings = append(in.res.Warnings, w)
		}
	}, nil
}

// unchanged tells whether writing would leave installed as it is.
func (in *installer) unchanged(installed map[string][]byte) bool {
	desired := in.desired.Data
	if in.opts.Rebase != nil {
		files, err := in.opts.Rebase(installed)
		if err != nil {
			return false // the attempt reports it
		}
		desired = files
	}
	return len(ChangedFiles(installed, keepRootsFiles(installed, desired))) == 0
}

// want verifies files as istiod will and makes them what is written.
func (in *installer) want(files map[string][]byte) error {
	bundle, rep, err := ca.ParseBundle(files, in.opts.Verify)
	in.res.After = rep
	if err != nil {
		return fmt.Errorf("cluster %s: %w, nothing sent: %w", in.cl.Name, ErrBundle, err)
	}
	desired, err := NewSecret(in.ns, files)
	if err != nil {
		return fmt.Errorf("cluster %s: %w", in.cl.Name, err)
	}
	in.desired, in.bundle = desired, bundle
	return nil
}

func (in *installer) dryRun() []string {
	if in.opts.DryRun {
		return []string{metav1.DryRunAll}
	}
	return nil
}

// attempt reads cacerts and decides. A conflict or already-exists error makes
// Install call it again.
func (in *installer) attempt(ctx context.Context) error {
	secrets := in.cl.Client.CoreV1().Secrets(in.ns)
	res := in.res
	res.Warnings = slices.Clone(in.lockWarnings)
	cur, err := secrets.Get(ctx, SecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && in.opts.Rebase != nil {
		return fmt.Errorf("cluster %s: namespace %s: %w", in.cl.Name, in.ns, ErrSecretGone)
	}
	if apierrors.IsNotFound(err) {
		res.Before, res.ChangedFiles, res.Backup = nil, nil, ""
		return in.create(ctx)
	}
	if err != nil {
		return apiError(in.cl.Name, "get", "secrets", in.ns, err)
	}
	if in.opts.CreateOnly {
		return fmt.Errorf("cluster %s: %w in namespace %s", in.cl.Name, ErrSecretExists, in.ns)
	}
	curFiles := SecretFiles(cur)
	if in.opts.Rebase != nil {
		files, err := in.opts.Rebase(curFiles)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", in.cl.Name, err)
		}
		if err := in.want(files); err != nil {
			return err
		}
	}
	res.Before = ca.Verify(curFiles, in.opts.Verify)
	data := keepRootsFiles(curFiles, in.desired.Data)
	if err := in.keepCRLs(curFiles, data); err != nil {
		return err
	}
	if !maps.EqualFunc(data, in.desired.Data, bytes.Equal) {
		res.After = ca.Verify(data, in.opts.Verify) // what is written: the installed roots bytes
	}
	res.ChangedFiles = ChangedFiles(curFiles, data)
	if len(res.ChangedFiles) == 0 {
		res.Action, res.ResourceVersion = ActionUnchanged, cur.ResourceVersion
		return nil
	}
	if old := res.Before.RootFingerprints; len(old) == 0 {
		res.Warnings = append(res.Warnings, "the installed cacerts has no readable root: replacing it")
	} else if !sameSet(old, res.After.RootFingerprints) && !in.opts.AllowNewRoot {
		return fmt.Errorf("cluster %s: %w (installed %s, bundle %s): changing roots belongs to a root rotation, or must be allowed explicitly",
			in.cl.Name, ErrRootChanged, shortFingerprints(old), shortFingerprints(res.After.RootFingerprints))
	}
	backup, err := in.backup(ctx, cur)
	if err != nil {
		return err
	}
	res.Backup = backup
	upd := cur.DeepCopy()
	upd.Data, upd.StringData = data, nil
	if upd.Labels == nil {
		upd.Labels = map[string]string{}
	}
	upd.Labels[LabelManagedBy] = ManagedBy
	if err := in.hook(ctx); err != nil {
		return err
	}
	out, err := secrets.Update(ctx, upd, metav1.UpdateOptions{DryRun: in.dryRun(), FieldManager: FieldManager})
	if apierrors.IsConflict(err) {
		return err // read again, decide again
	}
	if err != nil {
		return apiError(in.cl.Name, "update", "secrets", in.ns, err)
	}
	res.Action, res.ResourceVersion = ActionUpdated, out.ResourceVersion
	return nil
}

// keepCRLs keeps the installed ca-crl.pem when the bundle brings none: a cluster
// with CRLs on keeps them (dropping the file would not switch them off in a running
// istiod, only stop their refresh). When the bundle's CA has no current CRL there
// yet, one is signed with its key and added, since istiod refuses ca-crl.pem
// without it; the other clusters learn it from SyncCRLs, which a warning asks for.
// An unchanged CA keeps the file byte for byte, so a rerun changes nothing.
func (in *installer) keepCRLs(installed, data map[string][]byte) error {
	cur, ok := installed[ca.CRLFile]
	if _, brings := data[ca.CRLFile]; brings || !ok {
		return nil
	}
	crls, err := ca.ParseCRLsPEM(cur)
	if err != nil {
		in.res.Warnings = append(in.res.Warnings, fmt.Sprintf("the installed %s does not parse (%v): replaced without CRLs: the mesh CRL set must be spread again", ca.CRLFile, err))
		return nil
	}
	if own := ca.CRLOf(crls, in.bundle.Cert); own != nil && ca.CRLCurrent(own, in.now) == nil {
		data[ca.CRLFile] = cur
		return nil
	}
	own, err := ca.SignCRL(in.bundle.Cert, in.bundle.Key, nil, nil, in.now, in.opts.CRLTTL)
	if err != nil {
		return fmt.Errorf("cluster %s: %w", in.cl.Name, err)
	}
	data[ca.CRLFile] = ca.EncodeCRLsPEM(ca.MergeCRLs(ca.CurrentCRLs(crls, in.now), []*x509.RevocationList{own})...)
	in.res.Warnings = append(in.res.Warnings, fmt.Sprintf("%s kept and a CRL of the new CA added: the other clusters accept what it signs once the mesh CRL set is spread again", ca.CRLFile))
	return nil
}

// keepRootsFiles returns desired with each roots file (root-cert.pem, ca.crt) made from
// the bytes installed now: istiod compares roots files as bytes on a hot reload, and
// takes a change only when one file contains the other (see ca.KeepRootsFile). The
// certificates are the bundle's; only their bytes are the installed ones.
func keepRootsFiles(installed, desired map[string][]byte) map[string][]byte {
	out := maps.Clone(desired)
	for _, name := range []string{ca.RootCertFile, ca.TLSCAFile} {
		cur, ok := installed[name]
		want, ok2 := desired[name]
		if !ok || !ok2 {
			continue
		}
		roots, err := ca.ParseCertificatesPEM(want)
		if err != nil {
			continue // verified before: cannot happen
		}
		out[name] = ca.KeepRootsFile(cur, roots)
	}
	return out
}

func (in *installer) hook(ctx context.Context) error {
	if in.opts.beforeWrite == nil {
		return nil
	}
	return in.opts.beforeWrite(ctx, in.res.Attempts)
}

func (in *installer) create(ctx context.Context) error {
	secrets := in.cl.Client.CoreV1().Secrets(in.ns)
	if err := in.hook(ctx); err != nil {
		return err
	}
	opts := metav1.CreateOptions{DryRun: in.dryRun(), FieldManager: FieldManager}
	out, err := secrets.Create(ctx, in.desired.DeepCopy(), opts)
	if isNamespaceNotFound(err) {
		if err := in.createNamespace(ctx); err != nil {
			return err
		}
		in.res.NamespaceCreated = true
		if in.opts.DryRun {
			// A dry-run Secret cannot go into a dry-run namespace: the local checks
			// (NewSecret) are all there is.
			in.res.Action = ActionCreated
			return nil
		}
		out, err = secrets.Create(ctx, in.desired.DeepCopy(), opts)
	}
	if apierrors.IsAlreadyExists(err) {
		return err // created meanwhile: read again, decide again
	}
	if err != nil {
		return apiError(in.cl.Name, "create", "secrets", in.ns, err)
	}
	in.res.Action, in.res.ResourceVersion = ActionCreated, out.ResourceVersion
	return nil
}

func isNamespaceNotFound(err error) bool {
	var status apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d != nil && d.Kind == "namespaces"
}

func (in *installer) createNamespace(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: in.ns}}
	_, err := in.cl.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{DryRun: in.dryRun(), FieldManager: FieldManager})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return apiError(in.cl.Name, "create", "namespaces", "", err)
	}
	return nil
}

// backup copies cur to a new backup Secret and returns its name. Backups made in the
// same second get a -N suffix; an existing backup of the very same resourceVersion
// is reused.
func (in *installer) backup(ctx context.Context, cur *corev1.Secret) (string, error) {
	secrets := in.cl.Client.CoreV1().Secrets(in.ns)
	// The list only picks the number. Without it (a Role that drops list, with
	// KeepBackups < 0: nothing is pruned then, so no name is freed; or a failing
	// list, which pruning then reports) the numbers start at 0.
	existing, _ := Backups(ctx, in.cl, in.ns)
	first := nextBackupSeq(existing, in.now)
	for n := first; n < first+10; n++ {
		b := NewBackup(cur, in.now, n)
		_, err := secrets.Create(ctx, b, metav1.CreateOptions{DryRun: in.dryRun(), FieldManager: FieldManager})
		if err == nil {
			return b.Name, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return "", apiError(in.cl.Name, "create", "secrets", in.ns, fmt.Errorf("backup of cacerts: %w", err))
		}
		old, err := secrets.Get(ctx, b.Name, metav1.GetOptions{})
		if err == nil && old.Annotations[AnnotationBackupResourceVersion] == cur.ResourceVersion {
			return b.Name, nil
		}
	}
	return "", fmt.Errorf("cluster %s: backup of cacerts: ten backups in one second already exist", in.cl.Name)
}

// Backups lists the names of cacerts' backup Secrets in namespace, oldest first
// (by the API server's creation time).
func Backups(ctx context.Context, cl *Cluster, namespace string) ([]string, error) {
	list, err := cl.Client.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelBackupOf + "=" + SecretName})
	if err != nil {
		return nil, apiError(cl.Name, "list", "secrets", namespace, err)
	}
	var items []corev1.Secret
	for _, s := range list.Items {
		if strings.HasPrefix(s.Name, BackupPrefix) {
			items = append(items, s)
		}
	}
	// Age is the API server's creation time, not the time in the name: names carry
	// the clock of the host that made them, and a host whose clock ran ahead would
	// otherwise make a fresh backup look oldest, and pruning would delete it. Within
	// one second (the creation time's resolution) names made by one clock sort in
	// creation order ("-1", "-2", ... "-10" suffixes, numerically; see
	// nextBackupSeq).
	slices.SortStableFunc(items, func(a, b corev1.Secret) int {
		if c := a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return compareBackupNames(a.Name, b.Name)
	})
	names := make([]string, len(items))
	for i, s := range items {
		names[i] = s.Name
	}
	return names, nil
}

// PruneBackups deletes all but the newest keep backups of cacerts and returns the
// names it deleted.
func PruneBackups(ctx context.Context, cl *Cluster, namespace string, keep int) ([]string, error) {
	names, err := Backups(ctx, cl, namespace)
	if err != nil || len(names) <= keep {
		return nil, err
	}
	var deleted []string
	for _, name := range names[:len(names)-keep] {
		err := cl.Client.CoreV1().Secrets(namespace).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return deleted, apiError(cl.Name, "delete", "secrets", namespace, err)
		}
		deleted = append(deleted, name)
	}
	return deleted, nil
}

// RestartIstiod restarts every istiod Deployment (IstiodSelector) in namespace the
// way kubectl rollout restart does: it sets the pod template annotation
// kubectl.kubernetes.io/restartedAt to now. It returns the Deployments restarted.
func RestartIstiod(ctx context.Context, cl *Cluster, namespace string, now time.Time, dryRun bool) ([]string, error) {
	deps := cl.Client.AppsV1().Deployments(namespace)
	list, err := deps.List(ctx, metav1.ListOptions{LabelSelector: IstiodSelector})
	if err != nil {
		return nil, apiError(cl.Name, "list", "deployments", namespace, err)
	}
	patch := fmt.Appendf(nil, `{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, RestartedAtAnnotation, now.UTC().Format(time.RFC3339))
	opts := metav1.PatchOptions{FieldManager: FieldManager}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var restarted []string
	for _, d := range list.Items {
		if _, err := deps.Patch(ctx, d.Name, types.StrategicMergePatchType, patch, opts); err != nil {
			return restarted, apiError(cl.Name, "patch", "deployments", namespace, fmt.Errorf("restart %s: %w", d.Name, err))
		}
		restarted = append(restarted, d.Name)
	}
	return restarted, nil
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// shortFingerprints prints root fingerprints as sha256:<first 16 hex digits>.
func shortFingerprints(fps []string) string {
	out := make([]string, len(fps))
	for i, f := range fps {
		out[i] = textfmt.Fingerprint(f)
	}
	return strings.Join(out, ",")
}
