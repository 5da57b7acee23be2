package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/hashicorp/vault/api"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/dist/chart"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/k8s"
)

// TestChartCronJob renders the Helm chart (deploy/chart/meshpki) with Helm's Go
// library for several value sets, creates every object it renders (RBAC, the
// ServiceAccount, the CronJob...) in a real kube-apiserver, and then runs the
// CronJob's container as the kubelet would, short of a pod: its volumes are
// materialized from the real Secrets and ConfigMaps and real ServiceAccount tokens
// (TokenRequest), its paths mapped into a folder, and meshpki rotate runs
// in-process with exactly its arguments and environment, against the real API
// servers (with the ServiceAccount's or the kubeconfig user's permissions only)
// and a real Vault that reviews the ServiceAccount's token with that API server.
func TestChartCronJob(t *testing.T) {
	pool := testenv.NewK8sPool("mgmt", "east")
	env := pool.Get(t)
	t.Cleanup(pool.Stop)
	v := testenv.StartVaultT(t)
	vaultEnv(t, v, v.Token)
	admin := vaultAdmin(t, v)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The roots: Vault PKI, Vault KV, and a folder for the Secret.
	k8sMustRun(t, "root", "create", "--vault-pki", "pki", "--enable-mount", "--ttl", "3650d")
	k8sMustRun(t, "root", "create", "--vault-kv", "secret/meshpki/root")
	rootDir := filepath.Join(dir, "root")
	k8sMustRun(t, "root", "create", "--out", rootDir)
	// And a root whose key is in a PKCS#11 token (SoftHSM2): the folder holds
	// root-cert.pem alone, and the job reaches the key by --key-uri, the PIN in a
	// Secret mounted as a file.
	hsm := testenv.NewSoftHSM(t)
	hsmRootDir := filepath.Join(dir, "root-hsm")
	k8sMustRun(t, "root", "create", "--out", hsmRootDir, "--key-uri", hsm.URI("70", "chart-root"))
	hsmKeyURI := strings.Replace(hsm.URI("70", "chart-root"), hsm.PINFile, "/var/run/secrets/hsm/pin", 1)

	mgmt := env.Clusters[0]
	cs := map[string]*kubernetes.Clientset{}
	for _, c := range env.Clusters {
		cl, err := kubernetes.NewForConfig(c.RESTConfig(c.AdminToken))
		if err != nil {
			t.Fatal(err)
		}
		cs[c.Name] = cl
	}
	limitedKC, err := os.ReadFile(env.LimitedKubeconfig)
	if err != nil {
		t.Fatal(err)
	}

	// Vault: Kubernetes auth reviewing tokens with mgmt's API server using the
	// client's own token, a role for the chart's ServiceAccount in the test's
	// release namespaces, and a policy that may only sign or read the root.
	releases := []string{"chart-pki", "chart-kv", "chart-secret"}
	if err := admin.Sys().EnableAuthWithOptionsWithContext(ctx, "kubernetes", &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Logical().WriteWithContext(ctx, "auth/kubernetes/config", map[string]any{
		"kubernetes_host": mgmt.Host, "kubernetes_ca_cert": string(mgmt.CAData), "disable_local_ca_jwt": true,
	}); err != nil {
		t.Fatal(err)
	}
	if err := admin.Sys().PutPolicyWithContext(ctx, "meshpki-rotate", `path "pki/root/sign-intermediate" { capabilities = ["update"] }
path "secret/data/meshpki/root" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Logical().WriteWithContext(ctx, "auth/kubernetes/role/meshpki-rotate", map[string]any{
		"bound_service_account_names": []string{"meshpki-rotate"}, "bound_service_account_namespaces": releases,
		"token_policies": []string{"meshpki-rotate"}, "token_ttl": "15m",
	}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, release, cacertsNS string
		values                   map[string]any
		// setup creates what the user creates next to the chart (the kubeconfig
		// Secret, the root Secret, the mesh clusters' RBAC).
		setup    func(t *testing.T)
		clusters map[string]string // cluster (context) -> name in the mesh
		metrics  bool
		// rootCert, when set, is the root every installed bundle must trust first.
		rootCert string
	}{
		{
			name: "defaults: Vault PKI, Kubernetes auth, kubeconfig Secret, all contexts", release: "chart-pki", cacertsNS: "istio-system",
			values: map[string]any{},
			setup: func(t *testing.T) {
				kubeconfigSecret(t, cs["mgmt"], "chart-pki", limitedKC)
				for _, c := range []string{"mgmt", "east"} {
					cl, err := k8s.NewCluster(c, env.Clusters[clusterIndex(env, c)].RESTConfig(env.Clusters[clusterIndex(env, c)].AdminToken), k8s.ClusterOptions{})
					if err != nil {
						t.Fatal(err)
					}
					applyRoles(t, cl, "istio-system", "meshpki-install", "meshpki-rotate")
				}
			},
			clusters: map[string]string{"mgmt": "mgmt", "east": "east"},
		},
		{
			name: "Vault KV, in-cluster, renew-before, metrics textfile", release: "chart-kv", cacertsNS: "mesh-kv",
			values: map[string]any{
				"root":     map[string]any{"source": "vault-kv"},
				"clusters": map[string]any{"mode": "in-cluster", "inCluster": map[string]any{"name": "mgmt"}, "namespace": "mesh-kv"},
				"rotate":   map[string]any{"renewBefore": "30d"},
				"metrics":  map[string]any{"textfile": map[string]any{"enabled": true, "volume": map[string]any{"emptyDir": map[string]any{}}}},
			},
			setup: func(t *testing.T) {
				// What kube-controller-manager publishes in every namespace.
				_, err := cs["mgmt"].CoreV1().ConfigMaps("chart-kv").Create(ctx, &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"}, Data: map[string]string{"ca.crt": string(mgmt.CAData)}}, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
			},
			clusters: map[string]string{"mgmt": "mgmt"},
			metrics:  true,
		},
		{
			name: "root in a Secret, one context renamed", release: "chart-secret", cacertsNS: "mesh-secret",
			values: map[string]any{
				"root":     map[string]any{"source": "secret"},
				"clusters": map[string]any{"contexts": []any{"east"}, "names": map[string]any{"east": "east-1"}, "namespace": "mesh-secret"},
			},
			setup: func(t *testing.T) {
				kubeconfigSecret(t, cs["mgmt"], "chart-secret", limitedKC)
				data := map[string][]byte{}
				for _, f := range []string{"root-cert.pem", "root-key.pem"} {
					b, err := os.ReadFile(filepath.Join(rootDir, f))
					if err != nil {
						t.Fatal(err)
					}
					data[f] = b
				}
				if _, err := cs["mgmt"].CoreV1().Secrets("chart-secret").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "meshpki-root"}, Data: data}, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				cl, err := k8s.NewCluster("east", env.Clusters[1].RESTConfig(env.Clusters[1].AdminToken), k8s.ClusterOptions{})
				if err != nil {
					t.Fatal(err)
				}
				applyRoles(t, cl, "mesh-secret", "meshpki-install", "meshpki-rotate")
			},
			clusters: map[string]string{"east": "east-1"},
			rootCert: filepath.Join(rootDir, "root-cert.pem"),
		},
		{
			// docs/hsm.md, "The CronJob with an HSM": the chart's values as they are.
			name: "root key in an HSM: root-cert.pem in a Secret, --key-uri, PIN Secret", release: "chart-hsm", cacertsNS: "mesh-hsm",
			values: map[string]any{
				"root":              map[string]any{"source": "secret", "secret": map[string]any{"name": "meshpki-root-cert"}},
				"clusters":          map[string]any{"contexts": []any{"east"}, "namespace": "mesh-hsm"},
				"rotate":            map[string]any{"extraArgs": []any{"--key-uri=" + hsmKeyURI}},
				"extraEnv":          []any{map[string]any{"name": "LD_LIBRARY_PATH", "value": "/usr/local/lib/pkcs11"}},
				"extraVolumes":      []any{map[string]any{"name": "hsm-pin", "secret": map[string]any{"secretName": "meshpki-hsm-pin", "defaultMode": 0o400}}},
				"extraVolumeMounts": []any{map[string]any{"name": "hsm-pin", "mountPath": "/var/run/secrets/hsm", "readOnly": true}},
			},
			setup: func(t *testing.T) {
				kubeconfigSecret(t, cs["mgmt"], "chart-hsm", limitedKC)
				cert, err := os.ReadFile(filepath.Join(hsmRootDir, "root-cert.pem"))
				if err != nil {
					t.Fatal(err)
				}
				for name, data := range map[string]map[string][]byte{"meshpki-root-cert": {"root-cert.pem": cert}, "meshpki-hsm-pin": {"pin": []byte(hsm.PIN)}} {
					if _, err := cs["mgmt"].CoreV1().Secrets("chart-hsm").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{}); err != nil {
						t.Fatal(err)
					}
				}
				cl, err := k8s.NewCluster("east", env.Clusters[1].RESTConfig(env.Clusters[1].AdminToken), k8s.ClusterOptions{})
				if err != nil {
					t.Fatal(err)
				}
				applyRoles(t, cl, "mesh-hsm", "meshpki-install", "meshpki-rotate")
			},
			clusters: map[string]string{"east": "east"},
			rootCert: filepath.Join(hsmRootDir, "root-cert.pem"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.values["vault"] = map[string]any{"addr": v.Addr}
			tc.values["image"] = map[string]any{"repository": "meshpki", "tag": "test"}
			docs, err := chart.Render("../../"+chart.Dir, tc.values, tc.release)
			if err != nil {
				t.Fatal(err)
			}
			// The release namespace (helm install --create-namespace) and the
			// cacerts namespace in every cluster (Istio's).
			mustNamespace(t, cs["mgmt"], tc.release)
			for c := range tc.clusters {
				mustNamespace(t, cs[c], tc.cacertsNS)
			}
			job := applyDocs(t, cs["mgmt"], docs)
			tc.setup(t)
			sa := "system:serviceaccount:" + tc.release + ":" + job.Spec.JobTemplate.Spec.Template.Spec.ServiceAccountName
			// RBAC takes effect through an informer: wait until the ServiceAccount
			// may do what the run needs.
			if tc.values["root"] == nil || tc.values["root"].(map[string]any)["source"] != "secret" {
				waitAllowed(t, cs["mgmt"], sa, authorizationv1.ResourceAttributes{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"})
			}
			if tc.clusters["mgmt"] != "" && tc.values["clusters"] != nil && tc.values["clusters"].(map[string]any)["mode"] == "in-cluster" {
				waitAllowed(t, cs["mgmt"], sa, authorizationv1.ResourceAttributes{Namespace: tc.cacertsNS, Verb: "delete", Group: "coordination.k8s.io", Resource: "leases", Name: k8s.LeaseName})
			}

			args, root := podArgs(t, cs["mgmt"], mgmt, tc.release, job)
			n := len(tc.clusters)
			want := fmt.Sprintf("%d clusters: %d rotated\n", n, n)
			if n == 1 {
				want = "1 cluster: 1 rotated\n"
			}
			code, out, errOut := k8sRun(t, args...)
			if code != 0 || out != want {
				t.Fatalf("the CronJob's meshpki %s\nexit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
			}
			for c, meshName := range tc.clusters {
				s, err := cs[c].CoreV1().Secrets(tc.cacertsNS).Get(ctx, k8s.SecretName, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				b, _, err := ca.ParseBundle(k8s.SecretFiles(s), ca.VerifyOptions{})
				if err != nil {
					t.Fatalf("%s: installed bundle: %v", c, err)
				}
				if len(b.Cert.Subject.Locality) != 1 || b.Cert.Subject.Locality[0] != meshName {
					t.Errorf("%s: intermediate for %v, want %s", c, b.Cert.Subject.Locality, meshName)
				}
				if tc.rootCert != "" && !b.Roots[0].Equal(readCert(t, tc.rootCert)) {
					t.Errorf("%s: not signed by the Secret's root", c)
				}
			}
			if tc.metrics {
				mf := filepath.Join(root, "var/lib/meshpki/metrics/meshpki.prom")
				if got := mustProm(t, mf, "meshpki_rotations_total", "mgmt"); got != 1 {
					t.Errorf("metrics: rotations %v", got)
				}
			}
			// The next scheduled run finds nothing due and writes nothing.
			args, _ = podArgs(t, cs["mgmt"], mgmt, tc.release, job)
			code, out, errOut = k8sRun(t, args...)
			if code != 0 || !strings.HasSuffix(out, fmt.Sprintf("%d not due\n", n)) {
				t.Fatalf("second run: exit %d\n%s\n%s", code, out, errOut)
			}
		})
	}
}

func clusterIndex(env *testenv.K8s, name string) int {
	for i, c := range env.Clusters {
		if c.Name == name {
			return i
		}
	}
	return -1
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := pem.Decode(b)
	if p == nil {
		t.Fatalf("%s: no PEM", file)
	}
	c, err := x509.ParseCertificate(p.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustNamespace(t *testing.T, cs *kubernetes.Clientset, ns string) {
	t.Helper()
	_, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func kubeconfigSecret(t *testing.T, cs *kubernetes.Clientset, ns string, kc []byte) {
	t.Helper()
	_, err := cs.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "meshpki-kubeconfig"}, Data: map[string][]byte{"kubeconfig": kc}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// applyDocs creates every rendered object (a real create, not a dry run) and
// returns the CronJob.
func applyDocs(t *testing.T, cs *kubernetes.Clientset, docs []chart.Doc) *batchv1.CronJob {
	t.Helper()
	ctx := context.Background()
	var job *batchv1.CronJob
	for _, d := range docs {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(d.YAML), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", d.Template, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ConfigMap:
			_, err = cs.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *batchv1.CronJob:
			job, err = cs.BatchV1().CronJobs(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("%s: the chart renders %T, which this test does not create", d.Template, obj)
		}
		if err != nil {
			t.Fatalf("%s: the API server refuses %s: %v", d.Template, d.Kind, err)
		}
	}
	if job == nil {
		t.Fatal("the chart renders no CronJob")
	}
	return job
}

func waitAllowed(t *testing.T, cs *kubernetes.Clientset, user string, ra authorizationv1.ResourceAttributes) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: []string{"system:serviceaccounts"}, ResourceAttributes: &ra}}, metav1.CreateOptions{})
		if err == nil && sar.Status.Allowed {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s is not allowed %+v", user, ra)
}

// podArgs does what the kubelet does for the CronJob's pod, into a folder: it
// writes each mounted volume (Secrets, ConfigMaps, projected ServiceAccount
// tokens from TokenRequest with the volume's audience and expiry, empty dirs),
// and returns the container's arguments with the mount paths mapped into that
// folder, after setting its environment. In-cluster, the API server's address is
// what kubernetes.default.svc resolves to in a pod: here, the test cluster's.
func podArgs(t *testing.T, cs *kubernetes.Clientset, cluster *testenv.K8sCluster, ns string, job *batchv1.CronJob) ([]string, string) {
	t.Helper()
	ctx := context.Background()
	pod := job.Spec.JobTemplate.Spec.Template.Spec
	if len(pod.Containers) != 1 || len(pod.Containers[0].Command) != 0 {
		t.Fatalf("the CronJob does not run the image's entrypoint alone: %+v", pod.Containers)
	}
	c := pod.Containers[0]
	root := t.TempDir()
	mapPaths := func(s string) string {
		for _, m := range c.VolumeMounts {
			s = strings.ReplaceAll(s, m.MountPath+"/", root+m.MountPath+"/")
			if strings.HasSuffix(s, "="+m.MountPath) || s == m.MountPath {
				s = strings.TrimSuffix(s, m.MountPath) + root + m.MountPath
			}
		}
		return s
	}
	write := func(dir, name string, data []byte) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(mapPaths(string(data)), "https://kubernetes.default.svc", cluster.Host)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	items := func(dir string, data map[string][]byte, kp []corev1.KeyToPath) {
		if len(kp) == 0 {
			for k, b := range data {
				write(dir, k, b)
			}
			return
		}
		for _, i := range kp {
			write(dir, i.Path, data[i.Key])
		}
	}
	configMap := func(name string) map[string][]byte {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]byte{}
		for k, v := range cm.Data {
			out[k] = []byte(v)
		}
		return out
	}
	for _, m := range c.VolumeMounts {
		dir := filepath.Join(root, m.MountPath)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		var vol *corev1.Volume
		for i := range pod.Volumes {
			if pod.Volumes[i].Name == m.Name {
				vol = &pod.Volumes[i]
			}
		}
		if vol == nil {
			t.Fatalf("mount %s has no volume", m.Name)
		}
		switch {
		case vol.Secret != nil:
			s, err := cs.CoreV1().Secrets(ns).Get(ctx, vol.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			items(dir, s.Data, vol.Secret.Items)
		case vol.ConfigMap != nil:
			items(dir, configMap(vol.ConfigMap.Name), vol.ConfigMap.Items)
		case vol.Projected != nil:
			for _, src := range vol.Projected.Sources {
				switch {
				case src.ServiceAccountToken != nil:
					spec := authenticationv1.TokenRequestSpec{ExpirationSeconds: src.ServiceAccountToken.ExpirationSeconds}
					if a := src.ServiceAccountToken.Audience; a != "" {
						spec.Audiences = []string{a}
					}
					tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, pod.ServiceAccountName, &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
					if err != nil {
						t.Fatal(err)
					}
					write(dir, src.ServiceAccountToken.Path, []byte(tr.Status.Token))
				case src.ConfigMap != nil:
					items(dir, configMap(src.ConfigMap.Name), src.ConfigMap.Items)
				default:
					t.Fatalf("projected volume %s: unknown source %+v", vol.Name, src)
				}
			}
		case vol.EmptyDir != nil:
		default:
			t.Fatalf("volume %s: a kind this test does not make", vol.Name)
		}
	}
	vaultEnv(t, nil, "") // nothing from the test's environment: only the container's
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Fatalf("env %s from a source this test does not resolve", e.Name)
		}
		t.Setenv(e.Name, mapPaths(e.Value))
	}
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = mapPaths(a)
	}
	return args, root
}
