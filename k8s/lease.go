package k8s

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LeaseName is the coordination.k8s.io Lease that rotate holds, in cacerts'
// namespace, while it rotates that cluster's intermediate.
const LeaseName = "meshpki-rotate"

// DefaultLeaseDuration is how long a Lease stays held without renewal: a holder
// renews it every third of that, and a holder that died loses it after that.
const DefaultLeaseDuration = time.Minute

// ErrLeaseLost means a Lease this process held was taken over or deleted (it could
// not renew it in time): the work it guarded was stopped.
var ErrLeaseLost = errors.New("lock lost")

// LockedError means another holder has the Lease and it has not expired.
type LockedError struct {
	Cluster   string
	Namespace string
	Lease     string
	// Holder is the holder's identity, as it wrote it.
	Holder string
	// Expires is when the Lease expires unless its holder renews it.
	Expires time.Time
	// Waited is how long AcquireLease waited for it.
	Waited time.Duration
}

func (e *LockedError) Error() string {
	msg := fmt.Sprintf("cluster %s: locked by %s (Lease %s in namespace %s, held until %s unless renewed)",
		e.Cluster, e.Holder, e.Lease, e.Namespace, e.Expires.UTC().Format(time.RFC3339))
	if e.Waited > 0 {
		msg += fmt.Sprintf("; waited %s", e.Waited.Round(time.Second))
	}
	return msg
}

// LeaseOptions controls AcquireLease.
type LeaseOptions struct {
	// Namespace holds the Lease; empty means DefaultNamespace.
	Namespace string
	// Name is the Lease's name; empty means LeaseName.
	Name string
	// Holder identifies this process in the Lease (e.g. host name and a random
	// suffix): it must differ between processes, or two could both hold it.
	Holder string
	// Duration is how long the Lease stays valid without renewal; zero means
	// DefaultLeaseDuration. It is renewed every third of that.
	Duration time.Duration
	// Wait is how long to wait for a Lease another holder has; zero returns a
	// *LockedError at once.
	Wait time.Duration
	// Poll is the pause between attempts while waiting; zero means a second.
	Poll time.Duration
	// OnWait, if set, is called once when the Lease is found held and will be
	// waited for, with the cluster and the error that says by whom and until
	// when: a wait of up to Wait that people should see.
	OnWait func(cluster string, held *LockedError)
}

func (o LeaseOptions) withDefaults() LeaseOptions {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Name == "" {
		o.Name = LeaseName
	}
	if o.Duration <= 0 {
		o.Duration = DefaultLeaseDuration
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	return o
}

// Lease is a held Lease. It renews itself until Release.
type Lease struct {
	cl   *Cluster
	opts LeaseOptions
	// TookOver is the holder of the expired Lease this one replaced, if any.
	TookOver string

	mu  sync.Mutex
	cur *coordinationv1.Lease

	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// AcquireLease takes the Lease opts.Name in opts.Namespace of cl for opts.Holder:
// it creates it when there is none, takes it over when its holder let it expire
// (renew time + duration in the past) or released it, and otherwise waits up to
// opts.Wait, then fails with a *LockedError. Every write carries the
// resourceVersion it read, so two processes never both take it. The namespace is
// created if it is missing. The Lease renews itself every third of its duration
// until Release; if it is lost meanwhile, Context is cancelled with ErrLeaseLost.
func AcquireLease(ctx context.Context, cl *Cluster, opts LeaseOptions) (*Lease, error) {
	opts = opts.withDefaults()
	if opts.Holder == "" {
		return nil, errors.New("lease: no holder identity given")
	}
	start, told := time.Now(), false
	for {
		l, err := tryAcquire(ctx, cl, opts)
		if err == nil {
			l.start(ctx)
			return l, nil
		}
		var le *LockedError
		if !errors.As(err, &le) {
			return nil, err
		}
		waited := time.Since(start)
		if waited >= opts.Wait {
			le.Waited = waited
			return nil, le
		}
		if !told && opts.OnWait != nil {
			opts.OnWait(cl.Name, le)
		}
		told = true
		pause := min(opts.Poll, opts.Wait-waited)
		select {
		case <-ctx.Done():
			le.Waited = time.Since(start)
			return nil, fmt.Errorf("%w (stopped waiting: %w)", le, context.Cause(ctx))
		case <-time.After(pause):
		}
	}
}

// errRetryLease means another process wrote the Lease between our read and our
// write: read it again.
var errRetryLease = errors.New("lease changed meanwhile")

func tryAcquire(ctx context.Context, cl *Cluster, opts LeaseOptions) (*Lease, error) {
	for attempt := 0; ; attempt++ {
		l, err := acquireOnce(ctx, cl, opts)
		if !errors.Is(err, errRetryLease) {
			return l, err
		}
		if attempt >= 5 {
			return nil, fmt.Errorf("cluster %s: Lease %s in namespace %s keeps changing under us", cl.Name, opts.Name, opts.Namespace)
		}
	}
}

func acquireOnce(ctx context.Context, cl *Cluster, opts LeaseOptions) (*Lease, error) {
	leases := cl.Client.CoordinationV1().Leases(opts.Namespace)
	now := time.Now()
	cur, err := leases.Get(ctx, opts.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		created, err := createLease(ctx, cl, opts, newLease(opts, now))
		if apierrors.IsAlreadyExists(err) {
			return nil, errRetryLease
		}
		if err != nil {
			return nil, err
		}
		return &Lease{cl: cl, opts: opts, cur: created}, nil
	}
	if err != nil {
		return nil, apiError(cl.Name, "get", "leases", opts.Namespace, err)
	}
	holder, expires := LeaseState(cur)
	if holder != "" && holder != opts.Holder && now.Before(expires) {
		return nil, &LockedError{Cluster: cl.Name, Namespace: opts.Namespace, Lease: opts.Name, Holder: holder, Expires: expires}
	}
	upd := cur.DeepCopy()
	fresh := newLease(opts, now)
	upd.Spec = fresh.Spec
	transitions := int32(0)
	if cur.Spec.LeaseTransitions != nil {
		transitions = *cur.Spec.LeaseTransitions
	}
	if holder != opts.Holder {
		transitions++
	}
	upd.Spec.LeaseTransitions = &transitions
	out, err := leases.Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil, errRetryLease
	}
	if err != nil {
		return nil, apiError(cl.Name, "update", "leases", opts.Namespace, err)
	}
	l := &Lease{cl: cl, opts: opts, cur: out}
	if holder != opts.Holder {
		l.TookOver = holder
	}
	return l, nil
}

// createLease creates l, and the namespace first if it is missing.
func createLease(ctx context.Context, cl *Cluster, opts LeaseOptions, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	leases := cl.Client.CoordinationV1().Leases(opts.Namespace)
	out, err := leases.Create(ctx, l, metav1.CreateOptions{FieldManager: FieldManager})
	if isNamespaceNotFound(err) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: opts.Namespace}}
		if _, err := cl.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{FieldManager: FieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, apiError(cl.Name, "create", "namespaces", "", err)
		}
		out, err = leases.Create(ctx, l, metav1.CreateOptions{FieldManager: FieldManager})
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, apiError(cl.Name, "create", "leases", opts.Namespace, err)
	}
	return out, err
}

func newLease(opts LeaseOptions, now time.Time) *coordinationv1.Lease {
	secs := int32(max(opts.Duration.Round(time.Second)/time.Second, 1))
	t := metav1.NewMicroTime(now)
	holder := opts.Holder
	zero := int32(0)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:      opts.Name,
			Namespace: opts.Namespace,
			Labels:    map[string]string{LabelManagedBy: ManagedBy},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       &holder,
			LeaseDurationSeconds: &secs,
			AcquireTime:          &t,
			RenewTime:            &t,
			LeaseTransitions:     &zero,
		},
	}
}

// LeaseState reads a Lease: its holder ("" when released) and when it expires
// (renew time, else acquire time, plus its duration; the zero time when it has
// neither, which makes it expired).
func LeaseState(l *coordinationv1.Lease) (holder string, expires time.Time) {
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	var at time.Time
	switch {
	case l.Spec.RenewTime != nil:
		at = l.Spec.RenewTime.Time
	case l.Spec.AcquireTime != nil:
		at = l.Spec.AcquireTime.Time
	default:
		return holder, time.Time{}
	}
	var secs int32
	if l.Spec.LeaseDurationSeconds != nil {
		secs = *l.Spec.LeaseDurationSeconds
	}
	return holder, at.Add(time.Duration(secs) * time.Second)
}

// LeaseHolder reads the Lease opts.Name in opts.Namespace without taking it: the
// holder and expiry of a Lease that is held and not expired, else "" (also when
// there is none).
func LeaseHolder(ctx context.Context, cl *Cluster, opts LeaseOptions) (string, time.Time, error) {
	opts = opts.withDefaults()
	cur, err := cl.Client.CoordinationV1().Leases(opts.Namespace).Get(ctx, opts.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", time.Time{}, nil
	}
	if err != nil {
		return "", time.Time{}, apiError(cl.Name, "get", "leases", opts.Namespace, err)
	}
	holder, expires := LeaseState(cur)
	if holder == "" || !time.Now().Before(expires) {
		return "", time.Time{}, nil
	}
	return holder, expires, nil
}

// start begins renewing the Lease, tied to ctx.
func (l *Lease) start(ctx context.Context) {
	l.ctx, l.cancel = context.WithCancelCause(ctx)
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.renewLoop()
}

// Context is cancelled, with a cause wrapping ErrLeaseLost, when the Lease is lost
// before Release; and when the context AcquireLease got is.
func (l *Lease) Context() context.Context { return l.ctx }

// Holder is this Lease's holder identity.
func (l *Lease) Holder() string { return l.opts.Holder }

func (l *Lease) renewLoop() {
	defer close(l.done)
	every := l.opts.Duration / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		if err := l.renew(); err != nil {
			l.cancel(err)
			return
		}
	}
}

// renew extends the Lease. It returns an error wrapping ErrLeaseLost when the
// Lease was taken over or deleted, or could not be renewed before it expired;
// other errors are retried at the next tick.
func (l *Lease) renew() error {
	l.mu.Lock()
	cur := l.cur
	l.mu.Unlock()
	upd := cur.DeepCopy()
	now := metav1.NewMicroTime(time.Now())
	upd.Spec.RenewTime = &now
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.Duration/3)
	defer cancel()
	out, err := l.cl.Client.CoordinationV1().Leases(l.opts.Namespace).Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager})
	switch {
	case err == nil:
		l.mu.Lock()
		l.cur = out
		l.mu.Unlock()
		return nil
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		return fmt.Errorf("cluster %s: %w: Lease %s in namespace %s was taken over or deleted", l.cl.Name, ErrLeaseLost, l.opts.Name, l.opts.Namespace)
	}
	if _, expires := LeaseState(cur); !time.Now().Before(expires) {
		return fmt.Errorf("cluster %s: %w: could not renew Lease %s in namespace %s before it expired: %w", l.cl.Name, ErrLeaseLost, l.opts.Name, l.opts.Namespace, err)
	}
	return nil
}

// Release stops renewing and deletes the Lease, on condition that it is still the
// one this process holds (same UID and resourceVersion): a Lease someone took over
// is left alone. A Lease that cannot be deleted expires on its own after its
// duration. Release is safe to call more than once.
func (l *Lease) Release(ctx context.Context) error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		lost := context.Cause(l.ctx)
		l.cancel(errors.New("lease released"))
		if errors.Is(lost, ErrLeaseLost) {
			err = lost
			return
		}
		l.mu.Lock()
		cur := l.cur
		l.mu.Unlock()
		uid, rv := cur.UID, cur.ResourceVersion
		derr := l.cl.Client.CoordinationV1().Leases(l.opts.Namespace).Delete(ctx, l.opts.Name,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		switch {
		case derr == nil:
		case apierrors.IsConflict(derr) || apierrors.IsNotFound(derr):
			err = fmt.Errorf("cluster %s: %w: Lease %s in namespace %s changed before it was released", l.cl.Name, ErrLeaseLost, l.opts.Name, l.opts.Namespace)
		default:
			err = apiError(l.cl.Name, "delete", "leases", l.opts.Namespace, derr)
		}
	})
	return err
}

// TakeoverWarning is the warning for a Lease taken over from a holder that let it
// expire, "" when there was none.
func (l *Lease) TakeoverWarning() string {
	if l.TookOver == "" {
		return ""
	}
	return fmt.Sprintf("took over the lock that %s let expire", l.TookOver)
}

// ReleaseWarning releases l at the end of an operation, even when ctx is done
// (within 10 s), and returns the warning for a release that failed, "" otherwise.
func (l *Lease) ReleaseWarning(ctx context.Context) string {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := l.Release(rctx); err != nil {
		return fmt.Sprintf("releasing the lock: %v (it expires on its own)", err)
	}
	return ""
}
