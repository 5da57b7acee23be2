package chart

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/kubernetes/scheme"
)

const root = "../../.."

// TestPlainManifestsMatchChart: deploy/cronjob.yaml is what the chart renders
// (make manifests regenerates it), so the plain YAML and the chart never drift.
func TestPlainManifestsMatchChart(t *testing.T) {
	want, err := Plain(root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, PlainOut))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is not what the chart renders: run `make manifests` (or edit the chart, not the file)", PlainOut)
	}
}

// TestChartRBACMatchesPlain: the chart's in-cluster Roles grant exactly the rules
// of deploy/rbac.yaml's Roles of the same names.
func TestChartRBACMatchesPlain(t *testing.T) {
	docs, err := Render(filepath.Join(root, Dir), map[string]any{"clusters": map[string]any{"mode": "in-cluster"}}, "meshpki")
	if err != nil {
		t.Fatal(err)
	}
	plain := roles(t, readDocs(t, filepath.Join(root, "deploy/rbac.yaml")))
	chart := roles(t, docYAML(docs))
	for _, name := range []string{"meshpki-install", "meshpki-rotate"} {
		c, p := chart[name], plain[name]
		if c == nil || p == nil {
			t.Fatalf("Role %s: in chart %v, in deploy/rbac.yaml %v", name, c != nil, p != nil)
		}
		if fmt.Sprint(c.Rules) != fmt.Sprint(p.Rules) {
			t.Errorf("Role %s differs:\nchart:           %v\ndeploy/rbac.yaml: %v", name, c.Rules, p.Rules)
		}
	}
}

// TestChartValues renders the chart's choices and checks the job's arguments.
func TestChartValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   []string
		not    []string
	}{
		{"defaults", nil, []string{"--all-contexts", "--vault-pki=pki", "--vault-auth=kubernetes", "--vault-role=meshpki-rotate"}, []string{"--namespace=", "--metrics-file"}},
		{"kv, contexts, renew", map[string]any{
			"root":     map[string]any{"source": "vault-kv"},
			"clusters": map[string]any{"contexts": []any{"east", "west"}, "names": map[string]any{"east": "east-1"}, "namespace": "mesh-ca"},
			"rotate":   map[string]any{"renewBefore": "30d"},
			"metrics":  map[string]any{"textfile": map[string]any{"enabled": true}},
		}, []string{"--vault-kv=secret/meshpki/root", "--context=east", "--context=west", "--cluster=east=east-1", "--namespace=mesh-ca", "--renew-before=30d", "--metrics-file=/var/lib/meshpki/metrics/meshpki.prom"}, []string{"--all-contexts"}},
		{"secret root, in-cluster", map[string]any{
			"root":     map[string]any{"source": "secret"},
			"clusters": map[string]any{"mode": "in-cluster", "inCluster": map[string]any{"name": "mgmt"}},
		}, []string{"--root-dir=/etc/meshpki/root", "--context=mgmt"}, []string{"--vault", "VAULT_ADDR"}},
		{"approle", map[string]any{"vault": map[string]any{"auth": map[string]any{"method": "approle", "secretName": "meshpki-approle"}}},
			[]string{"--vault-auth=approle", "--vault-role-id-file=/etc/meshpki/vault-auth/role-id"}, []string{"--vault-sa-token-file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			docs, err := Render(filepath.Join(root, Dir), tc.values, "meshpki")
			if err != nil {
				t.Fatal(err)
			}
			job := cronJob(t, docs)
			c := job.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
			all := strings.Join(c.Args, " ")
			for _, e := range c.Env {
				all += " " + e.Name + "=" + e.Value
			}
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("no %s in %s", w, all)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(all, n) {
					t.Errorf("%s in %s", n, all)
				}
			}
			sc := c.SecurityContext
			ps := job.Spec.JobTemplate.Spec.Template.Spec.SecurityContext
			if sc == nil || *sc.ReadOnlyRootFilesystem != true || *sc.AllowPrivilegeEscalation || ps == nil || !*ps.RunAsNonRoot || ps.SeccompProfile == nil || ps.SeccompProfile.Type != "RuntimeDefault" {
				t.Errorf("security context %+v / %+v", sc, ps)
			}
		})
	}
	_, err := Render(filepath.Join(root, Dir), map[string]any{"root": map[string]any{"source": "file"}}, "meshpki")
	if err == nil || !strings.Contains(err.Error(), "want vault-pki, vault-kv or secret") {
		t.Errorf("a bad root.source: %v", err)
	}
}

func cronJob(t *testing.T, docs []Doc) *batchv1.CronJob {
	t.Helper()
	for _, d := range docs {
		if d.Kind == "CronJob" {
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(d.YAML), nil, nil)
			if err != nil {
				t.Fatalf("%s: %v\n%s", d.Template, err, d.YAML)
			}
			return obj.(*batchv1.CronJob)
		}
	}
	t.Fatal("no CronJob")
	return nil
}

func docYAML(docs []Doc) []string {
	var out []string
	for _, d := range docs {
		out = append(out, d.YAML)
	}
	return out
}

func readDocs(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(data), "\n---\n")
}

func roles(t *testing.T, docs []string) map[string]*rbacv1.Role {
	t.Helper()
	out := map[string]*rbacv1.Role{}
	for _, d := range docs {
		if !strings.Contains(d, "kind:") {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(d), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := obj.(*rbacv1.Role); ok {
			out[r.Name] = r
		}
	}
	return out
}
