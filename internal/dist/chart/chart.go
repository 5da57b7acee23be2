// Package chart renders meshpki's Helm chart (deploy/chart/meshpki) with Helm's
// own Go library, as `helm template` / `helm install` would, and writes the plain
// manifests generated from it (deploy/cronjob.yaml).
package chart

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"sigs.k8s.io/yaml"
)

// Paths from meshpki's module root.
const (
	Dir         = "deploy/chart/meshpki"
	PlainValues = "deploy/chart/plain-values.yaml"
	PlainOut    = "deploy/cronjob.yaml"
	// PlainNamespace is the namespace the plain manifests install into.
	PlainNamespace = "meshpki"
)

// Doc is one rendered object.
type Doc struct {
	// Template is the template it came from, e.g. meshpki/templates/cronjob.yaml.
	Template string
	Kind     string
	// YAML is the document as rendered, comments included.
	YAML string
}

// installOrder is the order objects are listed (and created) in, as Helm installs them.
var installOrder = []string{"Namespace", "ServiceAccount", "Secret", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "CronJob"}

var kindRE = regexp.MustCompile(`(?m)^kind:\s*(\S+)`)

// Render renders the chart in dir with values over its values.yaml, as release
// "meshpki" in namespace, and returns its objects in install order.
func Render(dir string, values map[string]any, namespace string) ([]Doc, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", dir, err)
	}
	vals, err := util.ToRenderValuesWithSchemaValidation(ch, values,
		common.ReleaseOptions{Name: "meshpki", Namespace: namespace, Revision: 1, IsInstall: true}, common.DefaultCapabilities.Copy(), false)
	if err != nil {
		return nil, fmt.Errorf("chart values: %w", err)
	}
	out, err := engine.Render(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("render chart: %w", err)
	}
	var docs []Doc
	for name, text := range out {
		if strings.HasSuffix(name, "NOTES.txt") || strings.HasPrefix(filepath.Base(name), "_") {
			continue
		}
		for _, d := range strings.Split("\n"+text, "\n---\n") {
			m := kindRE.FindStringSubmatch(d)
			if m == nil {
				continue
			}
			docs = append(docs, Doc{Template: name, Kind: m[1], YAML: strings.Trim(d, "\n") + "\n"})
		}
	}
	rank := func(k string) int {
		for i, o := range installOrder {
			if o == k {
				return i
			}
		}
		return len(installOrder)
	}
	sort.SliceStable(docs, func(i, j int) bool {
		if a, b := rank(docs[i].Kind), rank(docs[j].Kind); a != b {
			return a < b
		}
		return docs[i].Template < docs[j].Template
	})
	return docs, nil
}

// Values parses a values file.
func Values(file string) (map[string]any, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	v := map[string]any{}
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return v, nil
}

const plainHeader = `# GENERATED from the Helm chart deploy/chart/meshpki with deploy/chart/plain-values.yaml
# by ` + "`make manifests`" + `: edit the chart, not this file (a test checks they agree).
#
# meshpki rotate as a CronJob, with the root in Vault PKI and Vault's Kubernetes
# auth, for those without Helm. See docs/rotation.md for the Vault side and the
# full walk-through; the chart (helm install ... deploy/chart/meshpki) has more
# choices: a root in Vault KV or a Secret, in-cluster mode, metrics, resources.
#
# Apply in the cluster that runs the job (a management cluster; it may also be a
# mesh cluster):
#   kubectl apply -f deploy/cronjob.yaml
# It reaches the mesh clusters through a kubeconfig kept in Secret
# meshpki-kubeconfig (one context per mesh cluster):
#   kubectl -n meshpki create secret generic meshpki-kubeconfig --from-file=kubeconfig=mesh.kubeconfig
# and in every mesh cluster the kubeconfig's user needs deploy/rbac.yaml's Roles
# meshpki-install and meshpki-rotate.
#
# Replace: the image, VAULT_ADDR, the PKI mount (--vault-pki) and the Vault role.
`

// Plain renders the plain manifests from the chart: PlainOut's content, given
// meshpki's module root.
func Plain(root string) (string, error) {
	vals, err := Values(filepath.Join(root, PlainValues))
	if err != nil {
		return "", err
	}
	docs, err := Render(filepath.Join(root, Dir), vals, PlainNamespace)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(plainHeader)
	for _, d := range docs {
		b.WriteString("---\n")
		b.WriteString(d.YAML)
	}
	return b.String(), nil
}
