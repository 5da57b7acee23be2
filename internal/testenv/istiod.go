package testenv

// Real istiod (pilot-discovery) for a test cluster, run outside any cluster against the
// cluster's kube-apiserver, built by tools/build.sh istiod (from istio.io/istio).
//
// The cacerts Secret reaches istiod as kubelet delivers a Secret volume: every key is a
// symlink KEY -> ..data/KEY, ..data links to a timestamped folder, and an update writes a
// new folder and swaps ..data atomically (rename). istiod's own file watch sees that, as
// in a pod. The harness also stands in for the Deployment controller: when the pod
// template of Deployment istiod changes (kubectl rollout restart, meshpki
// --restart-istiod), it restarts the process.
//
// Environment:
//
//	ISTIOD_TESTENV_BIN  folder holding pilot-discovery, csrclient, bundlecheck and
//	                    crd-all.gen.yaml (tools/build.sh istiod prints it)

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// EnvIstiodBin names the folder of the istiod test binaries.
const EnvIstiodBin = "ISTIOD_TESTENV_BIN"

// Names the harness uses in every cluster.
const (
	IstioNamespace = "istio-system"
	// RootConfigMap is the trust bundle istiod publishes in every namespace.
	RootConfigMap = "istio-ca-root-cert"
	// WorkloadNamespace and WorkloadServiceAccount identify the test workloads.
	WorkloadNamespace      = "default"
	WorkloadServiceAccount = "demo"
	// TrustDomain is the mesh's trust domain.
	TrustDomain = "cluster.local"
)

// Lines istiod logs when it takes or refuses a cacerts change
// (pilot/pkg/bootstrap/istio_ca.go, handleEvent).
const (
	LogReloaded    = "Istiod has detected the newly added intermediate CA and updated its key and certs accordingly"
	LogRootRefused = "ROOT-CA not supported"
	LogLoadFailed  = "Failed to update new Plug-in CA certs"
	LogPluggedIn   = "Use local CA certificate"
	// LogCRL is what istiod logs when it took a new or changed ca-crl.pem
	// (pilot/pkg/bootstrap/istio_ca.go, handleEvent).
	LogCRL = "Istiod has detected the newly added CRL file and updated its CRL accordingly"
)

// IstiodBin returns ISTIOD_TESTENV_BIN, skipping the test without it (failing it when
// MESHPKI_REQUIRE_SERVERS=1).
func IstiodBin(t testing.TB) string {
	t.Helper()
	return binFromEnv(t, EnvIstiodBin, "istiod", "real istiod")
}

// IstiodOptions tunes an istiod.
type IstiodOptions struct {
	// MultiRoot sets ISTIO_MULTIROOT_MESH, which a root rotation needs.
	MultiRoot bool
	// ClusterTrustBundle sets ENABLE_CLUSTER_TRUST_BUNDLE_API (in the process and in
	// the Deployment's env, where meshpki reads it): istiod then publishes its roots
	// as ClusterTrustBundle istio.io:istiod-ca:root-cert instead of the
	// istio-ca-root-cert ConfigMaps, and no istio-ca-crl at all
	// (pilot/pkg/serviceregistry/kube/controller/multicluster.go).
	ClusterTrustBundle bool
}

// TrustBundleName is the ClusterTrustBundle istiod writes in that mode.
const TrustBundleName = "istio.io:istiod-ca:root-cert"

// Istiod is one real istiod for one test cluster.
type Istiod struct {
	Cluster *K8sCluster
	// Dir holds cacerts/ (the Secret volume), the mesh config and istiod.log.
	Dir string
	// Log is istiod's log file (all starts appended).
	Log string
	// CAAddr is istiod's CA (secure gRPC) address, as istio-agent dials it.
	CAAddr string

	bin    string
	opts   IstiodOptions
	client kubernetes.Interface
	kcfg   string

	mu       sync.Mutex
	proc     *k8sProc
	ports    [5]int
	restarts int
	template string
	stop     chan struct{}
	wg       sync.WaitGroup
}

// StartIstiod prepares cluster c for Istio (CRDs, namespace istio-system, a Deployment
// istiod for restarts to patch, a workload ServiceAccount), mirrors its cacerts Secret
// into a Secret volume, and starts istiod on it. It returns once istiod serves its CA
// and has published its trust bundle. The caller must Stop it.
func StartIstiod(ctx context.Context, bin string, c *K8sCluster, opts IstiodOptions) (_ *Istiod, err error) {
	for _, b := range []string{"pilot-discovery", "csrclient", "crd-all.gen.yaml"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("%s=%s: %w (build it with tools/build.sh istiod)", EnvIstiodBin, bin, err)
		}
	}
	dir, err := os.MkdirTemp(c.dir, "istiod-")
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(c.RESTConfig(c.AdminToken))
	if err != nil {
		return nil, err
	}
	i := &Istiod{Cluster: c, Dir: dir, Log: filepath.Join(dir, "istiod.log"), bin: bin, opts: opts, client: client,
		kcfg: filepath.Join(dir, "kubeconfig"), stop: make(chan struct{})}
	defer func() {
		if err != nil {
			i.Stop()
		}
	}()
	if err := i.prepare(ctx); err != nil {
		return nil, fmt.Errorf("cluster %s: prepare for istiod: %w", c.Name, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "cacerts"), 0o755); err != nil {
		return nil, err
	}
	if err := i.syncVolume(ctx); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "mesh"), []byte("trustDomain: "+TrustDomain+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "networks"), []byte("{}\n"), 0o644); err != nil {
		return nil, err
	}
	if err := i.start(ctx); errors.Is(err, errExitedEarly) {
		// pilot-discovery has been seen to exit (status 255) while starting, rarely,
		// on a busy machine: one more try, logged, before the test fails.
		fmt.Fprintf(os.Stderr, "testenv: istiod for %s exited while starting, starting it again on other ports: %v\n", c.Name, err)
		i.ports = [5]int{}
		err = i.start(ctx)
		if err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	i.wg.Add(1)
	go i.loop()
	return i, nil
}

// prepare applies Istio's CRDs and creates what istiod and the tests expect.
func (i *Istiod) prepare(ctx context.Context) error {
	c := i.Cluster
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, certificate-authority-data: %q}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: c, context: {cluster: c, user: admin}}]
current-context: c
`, c.Host, base64.StdEncoding.EncodeToString(c.CAData), c.AdminToken)
	if err := os.WriteFile(i.kcfg, []byte(kc), 0o600); err != nil {
		return err
	}
	if err := applyCRDs(ctx, c, filepath.Join(i.bin, "crd-all.gen.yaml")); err != nil {
		return err
	}
	_, err := i.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: IstioNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	labels := map[string]string{"app": "istiod"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "istiod", Namespace: IstioNamespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "discovery", Image: "istio/pilot (run by the test harness)",
					Env: []corev1.EnvVar{{Name: "ENABLE_CLUSTER_TRUST_BUNDLE_API", Value: fmt.Sprint(i.opts.ClusterTrustBundle)}}}}},
			},
		},
	}
	if _, err := i.client.AppsV1().Deployments(IstioNamespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: WorkloadServiceAccount, Namespace: WorkloadNamespace}}
	if _, err := i.client.CoreV1().ServiceAccounts(WorkloadNamespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	tmpl, err := i.podTemplate(ctx)
	if err != nil {
		return err
	}
	i.template = tmpl
	return nil
}

// applyCRDs server-side applies every CustomResourceDefinition in file.
func applyCRDs(ctx context.Context, c *K8sCluster, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(c.RESTConfig(c.AdminToken))
	if err != nil {
		return err
	}
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 1<<20)
	n := 0
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		if obj == nil || obj["kind"] != "CustomResourceDefinition" {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		if _, err := dyn.Resource(gvr).Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: "meshpki-testenv", Force: true}); err != nil {
			return fmt.Errorf("apply CRD %s: %w", u.GetName(), err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s: no CustomResourceDefinition", file)
	}
	// Wait until the CRDs are served, or istiod's informers start against nothing.
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err == nil && crdsEstablished(list.Items) >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("CRDs not established after 30 s (%v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func crdsEstablished(items []unstructured.Unstructured) int {
	n := 0
	for _, it := range items {
		conds, _, _ := unstructured.NestedSlice(it.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				n++
			}
		}
	}
	return n
}

func (i *Istiod) podTemplate(ctx context.Context) (string, error) {
	d, err := i.client.AppsV1().Deployments(IstioNamespace).Get(ctx, "istiod", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(d.Spec.Template)
	return string(b), err
}

// start runs pilot-discovery as run-istiod.sh in the recipe does.
func (i *Istiod) start(ctx context.Context) error {
	for k := range i.ports {
		if i.ports[k] == 0 {
			if i.ports[k] = k8sFreePort(); i.ports[k] == 0 {
				return errors.New("no free loopback port")
			}
		}
	}
	addr := func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }
	i.CAAddr = addr(i.ports[2])
	args := []string{"discovery", "--kubeconfig", i.kcfg,
		"--meshConfig", filepath.Join(i.Dir, "mesh"), "--networksConfig", filepath.Join(i.Dir, "networks"),
		"--httpAddr", addr(i.ports[0]), "--grpcAddr", addr(i.ports[1]), "--secureGRPCAddr", addr(i.ports[2]),
		"--monitoringAddr", addr(i.ports[3]), "--httpsAddr", addr(i.ports[4]), "--clusterID", i.Cluster.Name}
	f, err := os.OpenFile(i.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "=== testenv: start istiod (multiroot=%v, clustertrustbundle=%v) at %s\n", i.opts.MultiRoot, i.opts.ClusterTrustBundle, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(filepath.Join(i.bin, "pilot-discovery"), args...)
	cmd.Dir = i.Dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = k8sProcAttr()
	cmd.Env = append(os.Environ(),
		"ROOT_CA_DIR="+filepath.Join(i.Dir, "cacerts"),
		fmt.Sprintf("ISTIO_MULTIROOT_MESH=%v", i.opts.MultiRoot),
		fmt.Sprintf("ENABLE_CLUSTER_TRUST_BUNDLE_API=%v", i.opts.ClusterTrustBundle),
		"POD_NAMESPACE="+IstioNamespace, "JWT_POLICY=third-party-jwt")
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	p := &k8sProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	i.proc = p
	rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	return waitK8sReady(rctx, p, i.Log, func() bool {
		conn, err := net.DialTimeout("tcp", i.CAAddr, time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		if i.opts.ClusterTrustBundle {
			_, err = i.client.CertificatesV1beta1().ClusterTrustBundles().Get(rctx, TrustBundleName, metav1.GetOptions{})
		} else {
			_, err = i.client.CoreV1().ConfigMaps(IstioNamespace).Get(rctx, RootConfigMap, metav1.GetOptions{})
		}
		return err == nil
	})
}

// loop mirrors the Secret into the volume and restarts istiod when its Deployment's pod
// template changes, until Stop. It watches both objects, as kubelet would, rather
// than polling them: ten GETs a second per istiod cost its apiserver about 4% of a
// core at rest, and the tests start tens of them. A slow tick is a safety net.
func (i *Istiod) loop() {
	defer i.wg.Done()
	var watchers sync.WaitGroup
	defer watchers.Wait() // after cancel, below, ends them
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan struct{}, 1)
	poke := func() {
		select {
		case events <- struct{}{}:
		default:
		}
	}
	follow := func(open func(context.Context) (watch.Interface, error)) {
		defer watchers.Done()
		for ctx.Err() == nil {
			w, err := open(ctx)
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
			poke() // whatever changed while no watch was open
			for range w.ResultChan() {
				poke()
			}
			w.Stop()
		}
	}
	watchers.Add(2)
	go follow(func(ctx context.Context) (watch.Interface, error) {
		return i.client.CoreV1().Secrets(IstioNamespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=cacerts"})
	})
	go follow(func(ctx context.Context) (watch.Interface, error) {
		return i.client.AppsV1().Deployments(IstioNamespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=istiod"})
	})
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-i.stop:
			return
		case <-events:
		case <-tick.C:
		}
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		_ = i.syncVolume(sctx)
		if tmpl, err := i.podTemplate(sctx); err == nil && tmpl != i.template {
			i.template = tmpl
			_ = i.Restart(context.Background())
		}
		scancel()
	}
}

// Restart stops istiod and starts it again on the same volume and ports, as a new pod
// of the Deployment would start.
func (i *Istiod) Restart(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.proc != nil {
		_ = i.proc.stop()
	}
	i.restarts++
	if err := i.syncVolume(ctx); err != nil {
		return err
	}
	return i.start(ctx)
}

// Restarts counts the restarts since StartIstiod.
func (i *Istiod) Restarts() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.restarts
}

// Stop stops istiod and the volume sync.
func (i *Istiod) Stop() {
	select {
	case <-i.stop:
	default:
		close(i.stop)
	}
	i.wg.Wait()
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.proc != nil {
		_ = i.proc.stop()
	}
}

// syncVolume writes the cacerts Secret into Dir/cacerts as kubelet does, when it changed.
func (i *Istiod) syncVolume(ctx context.Context) error {
	s, err := i.client.CoreV1().Secrets(IstioNamespace).Get(ctx, "cacerts", metav1.GetOptions{})
	var data map[string][]byte
	switch {
	case apierrors.IsNotFound(err):
		data = nil // optional volume: empty until the Secret exists
	case err != nil:
		return err
	default:
		data = s.Data
	}
	return WriteSecretVolume(filepath.Join(i.Dir, "cacerts"), data)
}

// WriteSecretVolume makes dir hold data the way kubelet's atomic writer updates a Secret
// volume: a new ..<time> folder with the files, the ..data symlink swapped to it by a
// rename, a KEY -> ..data/KEY symlink per key, and the old folder removed. Unchanged data
// writes nothing.
func WriteSecretVolume(dir string, data map[string][]byte) error {
	cur := map[string][]byte{}
	if target, err := os.Readlink(filepath.Join(dir, "..data")); err == nil {
		ents, _ := os.ReadDir(filepath.Join(dir, target))
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, target, e.Name()))
			if err == nil {
				cur[e.Name()] = b
			}
		}
		if maps.EqualFunc(cur, data, bytes.Equal) {
			return nil
		}
	} else if len(data) == 0 {
		return nil
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	ts, err := os.MkdirTemp(dir, ".."+time.Now().UTC().Format("2006_01_02_15_04_05.")) // kubelet's ..<timestamp>
	if err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(data)) {
		if err := os.WriteFile(filepath.Join(ts, k), data[k], 0o644); err != nil {
			return err
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	for k := range data {
		link := filepath.Join(dir, k)
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
				return err
			}
		}
	}
	for k := range cur {
		if _, ok := data[k]; !ok {
			_ = os.Remove(filepath.Join(dir, k))
		}
	}
	if old != "" {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

// LogSize is the current length of istiod's log: pass it to LogSince to read only what
// istiod logs after now.
func (i *Istiod) LogSize() int64 {
	st, err := os.Stat(i.Log)
	if err != nil {
		return 0
	}
	return st.Size()
}

// LogSince returns what istiod logged from offset on.
func (i *Istiod) LogSince(offset int64) string {
	b, err := os.ReadFile(i.Log)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	return string(b[offset:])
}

// Refusals returns the lines logged from offset on in which istiod refused a cacerts
// change (and so kept its old CA).
func (i *Istiod) Refusals(offset int64) []string {
	var out []string
	for _, l := range strings.Split(i.LogSince(offset), "\n") {
		if strings.Contains(l, LogRootRefused) || strings.Contains(l, LogLoadFailed) {
			out = append(out, l)
		}
	}
	return out
}

// WaitLog waits until istiod logs want (after offset), or one of its refusals, or ctx
// ends. It returns the refusal as an error.
func (i *Istiod) WaitLog(ctx context.Context, offset int64, want string) error {
	for {
		s := i.LogSince(offset)
		if r := i.Refusals(offset); len(r) > 0 {
			return fmt.Errorf("cluster %s: istiod refused the change: %s", i.Cluster.Name, strings.Join(r, " | "))
		}
		if strings.Contains(s, want) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s: istiod did not log %q: %w; log since:\n%s", i.Cluster.Name, want, ctx.Err(), tail(s, 20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// PublishedRoots returns the trust bundle istiod published (ConfigMap
// istio-ca-root-cert, key root-cert.pem) in namespace ns, or in its
// ClusterTrustBundle mode the cluster's ClusterTrustBundle (ns aside).
func (i *Istiod) PublishedRoots(ctx context.Context, ns string) ([]byte, error) {
	if i.opts.ClusterTrustBundle {
		b, err := i.client.CertificatesV1beta1().ClusterTrustBundles().Get(ctx, TrustBundleName, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return []byte(b.Spec.TrustBundle), nil
	}
	cm, err := i.client.CoreV1().ConfigMaps(ns).Get(ctx, RootConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return []byte(cm.Data["root-cert.pem"]), nil
}

// CRLConfigMap is the ConfigMap istiod publishes the plugged-in CA's ca-crl.pem in,
// in every namespace, for the proxies (pilot/pkg/features/experimental.go
// PILOT_CRL_CONFIGMAP, key ca-crl.pem).
const CRLConfigMap = "istio-ca-crl"

// PublishedCRL returns the ca-crl.pem istiod published in namespace ns: what every
// proxy's Envoy there enforces.
func (i *Istiod) PublishedCRL(ctx context.Context, ns string) ([]byte, error) {
	cm, err := i.client.CoreV1().ConfigMaps(ns).Get(ctx, CRLConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return []byte(cm.Data["ca-crl.pem"]), nil
}

// WaitPublishedCRL waits until istiod has published want as ca-crl.pem in
// istio-system.
func (i *Istiod) WaitPublishedCRL(ctx context.Context, want []byte) error {
	for {
		got, err := i.PublishedCRL(ctx, IstioNamespace)
		if err == nil && bytes.Equal(got, want) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s: istiod did not publish the wanted %s (last error %v): %w", i.Cluster.Name, CRLConfigMap, err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitPublished waits until the trust bundle istiod published in istio-system holds
// exactly the certificates in want.
func (i *Istiod) WaitPublished(ctx context.Context, want []*x509.Certificate) error {
	var got []*x509.Certificate
	for {
		b, err := i.PublishedRoots(ctx, IstioNamespace)
		if err == nil {
			got = parseCerts(b)
			if sameCerts(got, want) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s: istiod published %d roots, not the %d wanted: %w", i.Cluster.Name, len(got), len(want), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WorkloadCert is a workload certificate that istiod signed.
type WorkloadCert struct {
	KeyPEM   []byte
	ChainPEM []byte
	// Chain is leaf, the intermediate that signed it, then the roots istiod sent.
	Chain []*x509.Certificate
}

// SignWorkload asks istiod's CA for a workload certificate exactly as istio-agent does
// (gRPC, a service-account token with audience istio-ca, trusting the published trust
// bundle), for spiffe://cluster.local/ns/default/sa/demo.
func (i *Istiod) SignWorkload(ctx context.Context) (*WorkloadCert, error) {
	tok, err := i.client.CoreV1().ServiceAccounts(WorkloadNamespace).CreateToken(ctx, WorkloadServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"istio-ca"}, ExpirationSeconds: ptr(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: token: %w", i.Cluster.Name, err)
	}
	roots, err := i.PublishedRoots(ctx, IstioNamespace)
	if err != nil {
		return nil, err
	}
	d, err := os.MkdirTemp(i.Dir, "workload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(d)
	p := func(n string) string { return filepath.Join(d, n) }
	if err := os.WriteFile(p("root.pem"), roots, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p("token"), []byte(tok.Status.Token), 0o600); err != nil {
		return nil, err
	}
	spiffe := fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", TrustDomain, WorkloadNamespace, WorkloadServiceAccount)
	cmd := exec.CommandContext(ctx, filepath.Join(i.bin, "csrclient"), "-addr", i.CAAddr, "-root", p("root.pem"),
		"-token", p("token"), "-spiffe", spiffe, "-cluster", i.Cluster.Name, "-key", p("key.pem"), "-chain", p("chain.pem"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("cluster %s: csrclient: %w: %s", i.Cluster.Name, err, out)
	}
	w := &WorkloadCert{}
	if w.KeyPEM, err = os.ReadFile(p("key.pem")); err != nil {
		return nil, err
	}
	if w.ChainPEM, err = os.ReadFile(p("chain.pem")); err != nil {
		return nil, err
	}
	if w.Chain = parseCerts(w.ChainPEM); len(w.Chain) < 2 {
		return nil, fmt.Errorf("cluster %s: istiod returned %d certificates", i.Cluster.Name, len(w.Chain))
	}
	return w, nil
}

func ptr[T any](v T) *T { return &v }

// parseCerts reads the CERTIFICATE blocks of PEM data, skipping what does not
// parse: the harness reports what istiod published, it does not judge it.
func parseCerts(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return out
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil && b.Type == "CERTIFICATE" {
			out = append(out, c)
		}
	}
}

// sameCerts reports whether a and b hold the same certificates, as sets.
func sameCerts(a, b []*x509.Certificate) bool {
	has := func(set []*x509.Certificate, c *x509.Certificate) bool {
		return slices.ContainsFunc(set, c.Equal)
	}
	for _, c := range a {
		if !has(b, c) {
			return false
		}
	}
	for _, c := range b {
		if !has(a, c) {
			return false
		}
	}
	return true
}
