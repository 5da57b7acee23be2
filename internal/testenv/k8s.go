package testenv

// Real Kubernetes clusters for tests: kube-apiserver + etcd built by
// tools/build.sh k8s-testenv.
//
// Environment:
//
//	K8S_TESTENV_BIN          folder holding kube-apiserver and etcd (tools/build.sh k8s-testenv prints it)
//	MESHPKI_REQUIRE_SERVERS  when 1, a test that needs clusters fails instead of skipping
//	MESHPKI_KEEP_TESTENV     when 1, the clusters' folder (logs, etcd data) is kept

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Environment variables the harness reads.
const (
	EnvK8sBin  = "K8S_TESTENV_BIN"
	EnvK8sKeep = "MESHPKI_KEEP_TESTENV"
	// k8sRequire is MESHPKI_REQUIRE_SERVERS, which make test sets.
	k8sRequire = "MESHPKI_REQUIRE_SERVERS"
)

// LimitedUser is a user every cluster knows (by its token) and grants nothing: tests
// bind the Roles they want it to have.
const LimitedUser = "meshpki-limited"

// K8s is a set of real clusters: one etcd and one kube-apiserver per cluster (each
// with its own etcd prefix), all on 127.0.0.1.
type K8s struct {
	// Dir holds logs, certificates, etcd data and the kubeconfigs.
	Dir string
	// Kubeconfig has one context per cluster, named after it, as an admin
	// (system:masters).
	Kubeconfig string
	// LimitedKubeconfig has the same contexts as LimitedUser.
	LimitedKubeconfig string
	Clusters          []*K8sCluster

	bin  string
	etcd *k8sProc
}

// K8sCluster is one kube-apiserver of a K8s.
type K8sCluster struct {
	Name string
	// Host is https://127.0.0.1:<port>.
	Host         string
	CAData       []byte
	AdminToken   string
	LimitedToken string

	args []string
	dir  string
	bin  string
	mu   sync.Mutex
	api  *k8sProc
}

// StartK8s starts one etcd and one kube-apiserver per name from the binaries in
// bin, concurrently, and waits until every apiserver is ready (about 5 s each). The
// caller must Stop it. A port taken between choosing it and the server binding it
// (test packages run side by side) makes it start everything again, up to 3 times.
func StartK8s(ctx context.Context, bin string, names ...string) (*K8s, error) {
	for attempt := 1; ; attempt++ {
		env, err := startK8sOnce(ctx, bin, names...)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return env, err
		}
		fmt.Fprintf(os.Stderr, "testenv: a port was taken meanwhile, starting the clusters again (attempt %d): %v\n", attempt+1, firstLine(err.Error()))
	}
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

func startK8sOnce(ctx context.Context, bin string, names ...string) (_ *K8s, err error) {
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("%s=%s: %w (build it with tools/build.sh k8s-testenv)", EnvK8sBin, bin, err)
		}
	}
	dir, err := os.MkdirTemp("", "meshpki-k8s-")
	if err != nil {
		return nil, err
	}
	env := &K8s{Dir: dir, bin: bin, Kubeconfig: filepath.Join(dir, "kubeconfig"), LimitedKubeconfig: filepath.Join(dir, "kubeconfig-limited")}
	defer func() {
		if err != nil {
			env.Stop()
		}
	}()
	certPEM, keyPEM, err := k8sServingCert()
	if err != nil {
		return nil, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})
	for name, data := range map[string][]byte{"serving.crt": certPEM, "serving.key": keyPEM, "sa.key": saPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	if err := env.startEtcd(ctx); err != nil {
		return nil, err
	}
	for _, name := range names {
		c, err := env.newCluster(name, certPEM)
		if err != nil {
			return nil, err
		}
		env.Clusters = append(env.Clusters, c)
	}
	errs := make([]error, len(env.Clusters))
	var wg sync.WaitGroup
	for i, c := range env.Clusters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Start(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := env.writeKubeconfig(env.Kubeconfig, func(c *K8sCluster) (string, string) { return "admin", c.AdminToken }); err != nil {
		return nil, err
	}
	if err := env.writeKubeconfig(env.LimitedKubeconfig, func(c *K8sCluster) (string, string) { return LimitedUser, c.LimitedToken }); err != nil {
		return nil, err
	}
	return env, nil
}

func (env *K8s) startEtcd(ctx context.Context) error {
	client, peer := k8sFreePort(), k8sFreePort()
	if client == 0 || peer == 0 {
		return errors.New("no free loopback port")
	}
	cu := fmt.Sprintf("http://127.0.0.1:%d", client)
	pu := fmt.Sprintf("http://127.0.0.1:%d", peer)
	var err error
	env.etcd, err = startK8sProc(filepath.Join(env.bin, "etcd"), []string{
		"--name=etcd0", "--data-dir=" + filepath.Join(env.Dir, "etcd"),
		"--listen-client-urls=" + cu, "--advertise-client-urls=" + cu,
		"--listen-peer-urls=" + pu, "--initial-advertise-peer-urls=" + pu,
		"--initial-cluster=etcd0=" + pu,
		"--unsafe-no-fsync=true", "--quota-backend-bytes=1073741824", "--log-level=warn",
	}, filepath.Join(env.Dir, "etcd.log"))
	if err != nil {
		return err
	}
	etcdURL := cu
	return waitK8sReady(ctx, env.etcd, filepath.Join(env.Dir, "etcd.log"), func() bool {
		resp, err := http.Get(etcdURL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func (env *K8s) newCluster(name string, caPEM []byte) (*K8sCluster, error) {
	port := k8sFreePort()
	if port == 0 {
		return nil, errors.New("no free loopback port")
	}
	dir := filepath.Join(env.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	c := &K8sCluster{Name: name, Host: fmt.Sprintf("https://127.0.0.1:%d", port), CAData: caPEM,
		AdminToken: k8sToken(), LimitedToken: k8sToken(), dir: dir, bin: filepath.Join(env.bin, "kube-apiserver")}
	tokens := fmt.Sprintf("%s,admin,admin,system:masters\n%s,%s,%s\n", c.AdminToken, c.LimitedToken, LimitedUser, LimitedUser)
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(tokens), 0o600); err != nil {
		return nil, err
	}
	saKey := filepath.Join(env.Dir, "sa.key")
	c.args = []string{
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--tls-cert-file=" + filepath.Join(env.Dir, "serving.crt"), "--tls-private-key-file=" + filepath.Join(env.Dir, "serving.key"),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--etcd-servers=" + env.etcd.url(), "--etcd-prefix=/registry-" + name,
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + c.Host,
		"--service-account-key-file=" + saKey, "--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		// kube-apiserver refuses a loopback advertise address otherwise.
		"--endpoint-reconciler-type=none",
		// Priority and fairness only queues requests; off, a start costs about a tenth less CPU.
		"--enable-priority-and-fairness=false",
		// Without the watch cache, lists and watches go to etcd: measured on one
		// cluster with Istio's CRDs and an istiod, about 30% less apiserver CPU
		// (start 2.1 vs 2.6 CPU-s, CRDs 1.5 vs 1.8, idle 1.3% vs 2.9% of a core).
		"--watch-cache=false",
		// ClusterTrustBundles, as istiod writes them with ENABLE_CLUSTER_TRUST_BUNDLE_API
		// (certificates.k8s.io/v1beta1 only, in every Istio release through 1.31:
		// pilot/pkg/config/kube/clustertrustbundle/controller.go). Kubernetes 1.37 serves
		// v1 by default and v1beta1 only when asked (pkg/controlplane/instance.go).
		"--runtime-config=certificates.k8s.io/v1beta1/clustertrustbundles=true",
	}
	return c, nil
}

// Start starts the cluster's kube-apiserver (again, after Stop: etcd keeps its
// data) and waits until it is ready.
func (c *K8sCluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.api != nil {
		return nil
	}
	log := filepath.Join(c.dir, "apiserver.log")
	p, err := startK8sProc(c.bin, c.args, log)
	if err != nil {
		return err
	}
	cfg := c.RESTConfig(c.AdminToken)
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		p.stop()
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	err = waitK8sReady(ctx, p, log, func() bool {
		req, _ := http.NewRequest(http.MethodGet, c.Host+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		p.stop()
		return fmt.Errorf("cluster %s: %w", c.Name, err)
	}
	c.api = p
	return nil
}

// Stop stops the cluster's kube-apiserver; its data stays in etcd.
func (c *K8sCluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.api == nil {
		return nil
	}
	err := c.api.stop()
	c.api = nil
	return err
}

// RESTConfig is a client config for the cluster with a bearer token (AdminToken or
// LimitedToken).
func (c *K8sCluster) RESTConfig(token string) *rest.Config {
	return &rest.Config{Host: c.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: c.CAData}}
}

// Stop stops every process and removes Dir (unless MESHPKI_KEEP_TESTENV=1).
func (env *K8s) Stop() error {
	var errs []error
	for _, c := range env.Clusters {
		errs = append(errs, c.Stop())
	}
	if env.etcd != nil {
		errs = append(errs, env.etcd.stop())
	}
	if os.Getenv(EnvK8sKeep) != "1" {
		errs = append(errs, os.RemoveAll(env.Dir))
	}
	return errors.Join(errs...)
}

func (env *K8s) writeKubeconfig(path string, user func(*K8sCluster) (string, string)) error {
	cfg := clientcmdapi.NewConfig()
	for _, c := range env.Clusters {
		u, tok := user(c)
		cfg.Clusters[c.Name] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: c.CAData}
		cfg.AuthInfos[c.Name+"-"+u] = &clientcmdapi.AuthInfo{Token: tok}
		cfg.Contexts[c.Name] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: c.Name + "-" + u}
	}
	if len(env.Clusters) > 0 {
		cfg.CurrentContext = env.Clusters[0].Name
	}
	return clientcmd.WriteToFile(*cfg, path)
}

// K8sPool starts a K8s the first time a test asks for it, and only then: a test
// run that needs no cluster starts none. Stop it in TestMain after m.Run.
type K8sPool struct {
	names []string
	once  sync.Once
	env   *K8s
	err   error
}

// NewK8sPool returns a pool whose K8s has one cluster per name.
func NewK8sPool(names ...string) *K8sPool { return &K8sPool{names: names} }

// Get returns the running clusters, starting them on first use. Without
// K8S_TESTENV_BIN it skips the test, or fails it when MESHPKI_REQUIRE_SERVERS=1.
func (p *K8sPool) Get(t testing.TB) *K8s {
	t.Helper()
	binFromEnv(t, EnvK8sBin, "k8s-testenv", "real kube-apiservers")
	env, err := p.Start()
	if err != nil {
		t.Fatalf("start clusters: %v", err)
	}
	return env
}

// Stop stops the clusters if they were started.
func (p *K8sPool) Stop() {
	if p.env != nil {
		if err := p.env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "testenv: stop:", err)
		}
	}
}

// k8sProc is a server process.
type k8sProc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
	err  error
}

func startK8sProc(bin string, args []string, logFile string) (*k8sProc, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = k8sProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &k8sProc{cmd: cmd, done: make(chan struct{})}
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--listen-client-urls="); ok {
			p.addr = v
		}
	}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *k8sProc) url() string { return p.addr }

// stop sends SIGTERM, then SIGKILL after 10 s.
func (p *k8sProc) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// waitK8sReady polls ready every 50 ms until it is true, the process exits or ctx ends.
func waitK8sReady(ctx context.Context, p *k8sProc, log string, ready func() bool) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready() {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v): %w; its errors and last lines of %s:\n%s\n...\n%s", filepath.Base(p.cmd.Path), p.err, errExitedEarly, log, k8sLogErrors(log, 10), k8sLogTail(log, 30))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w; last lines of %s:\n%s", filepath.Base(p.cmd.Path), ctx.Err(), log, k8sLogTail(log, 30))
		case <-tick.C:
		}
	}
}

// errExitedEarly: a server process exited before it was ready.
var errExitedEarly = errors.New("exited before it was ready")

// k8sLogErrors returns the last n lines of file that report an error.
func k8sLogErrors(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "\terror\t") || strings.Contains(l, "\tfatal\t") || strings.Contains(l, "Error:") || strings.HasPrefix(l, "F") && strings.Contains(l, "]") {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "\n")
}

func k8sLogTail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// k8sFreePort asks the kernel for a free loopback port (0 if none).
// k8sFreePort finds a loopback port for a server to listen on. It picks below
// Linux's ephemeral range (ip_local_port_range starts at 32768): a port the kernel
// handed out by listening on :0 is one it may hand out again at once as the local
// port of any outgoing connection, and a server given that port then fails with
// "address already in use" (seen with istiod's gRPC port on a busy run). Ports
// given out are not given again by this process.
func k8sFreePort() int {
	k8sPorts.Lock()
	defer k8sPorts.Unlock()
	if k8sPorts.given == nil {
		k8sPorts.given = map[int]bool{}
	}
	for range 200 {
		n, err := rand.Int(rand.Reader, big.NewInt(32768-16384))
		if err != nil {
			return 0
		}
		port := 16384 + int(n.Int64())
		if k8sPorts.given[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		k8sPorts.given[port] = true
		return port
	}
	return 0
}

// k8sPorts are the ports k8sFreePort gave out.
var k8sPorts struct {
	sync.Mutex
	given map[int]bool
}

func k8sToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// k8sServingCert makes a self-signed certificate for 127.0.0.1 and localhost that is
// its own CA, so that it is both the apiservers' serving cert and the kubeconfig's CA.
func k8sServingCert() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "meshpki testenv kube-apiserver"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// binFromEnv returns the test server folder in environment variable name, built by
// tools/build.sh tool. Unset, it skips the test (what names what it needs), or fails
// it when MESHPKI_REQUIRE_SERVERS=1.
func binFromEnv(t testing.TB, name, tool, what string) string {
	t.Helper()
	bin := os.Getenv(name)
	if bin == "" {
		if os.Getenv(k8sRequire) == "1" {
			t.Fatalf("%s is not set and %s=1: build it with tools/build.sh %s", name, k8sRequire, tool)
		}
		t.Skipf("%s not set: skipping a test that needs %s (tools/build.sh %s prints the folder)", name, what, tool)
	}
	return bin
}

// Tool finds program name (openssl, say) on PATH for a test. Without it the test
// is skipped, or failed when MESHPKI_REQUIRE_SERVERS=1 (CI installs it): a
// check that silently does not run is no check.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv(k8sRequire) == "1" {
			t.Fatalf("%s is not installed and %s=1", name, k8sRequire)
		}
		t.Skipf("%s not installed: skipping a check made with it", name)
	}
	return p
}
