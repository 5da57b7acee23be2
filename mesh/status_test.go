package mesh

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

func TestStatusFlagsDifferentRootAndMissingSecret(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	for _, cl := range clusters[:2] {
		_, files := mint(t, nil, cl.Name)
		mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
	}
	odd := clusters[2]
	_, files := mint(t, newRoot(t), odd.Name)
	mustInstall(t, odd, files, k8s.InstallOptions{Namespace: ns})
	var sts []*k8s.ClusterStatus
	for _, r := range k8s.Each(testContext(t), clusters, 0, func(ctx context.Context, cl *k8s.Cluster) (*k8s.ClusterStatus, error) {
		return k8s.Status(ctx, cl, k8s.StatusOptions{Namespace: ns})
	}, nil) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		sts = append(sts, r.Value)
	}
	probs := MeshProblems(sts)
	if len(probs) != 1 || probs[0].Check != "mesh-roots" || !strings.Contains(probs[0].Message, odd.Name) || strings.Contains(probs[0].Message, clusters[1].Name+",") {
		t.Fatalf("mesh problems %v, want one naming %s", probs, odd.Name)
	}

	// A cluster without cacerts, and one with a broken cacerts.
	ns2 := testNamespace(t)
	_, good := mint(t, nil, clusters[0].Name)
	mustInstall(t, clusters[0], good, k8s.InstallOptions{Namespace: ns2})
	_, broken := mint(t, nil, clusters[1].Name)
	delete(broken, ca.CertChainFile)
	sec, err := k8s.NewSecret(ns2, broken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clusters[1].Client.CoreV1().Namespaces().Create(testContext(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns2}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := clusters[1].Client.CoreV1().Secrets(ns2).Create(testContext(t), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sts = nil
	for _, cl := range clusters {
		st, err := k8s.Status(testContext(t), cl, k8s.StatusOptions{Namespace: ns2})
		if err != nil {
			t.Fatal(err)
		}
		sts = append(sts, st)
	}
	if v := []k8s.Verdict{sts[0].Verdict, sts[1].Verdict, sts[2].Verdict}; fmt.Sprint(v) != "[ok broken missing]" {
		t.Fatalf("verdicts %v", v)
	}
	checks := map[string]string{}
	for _, p := range MeshProblems(sts) {
		checks[p.Check] = p.Message
	}
	if !strings.HasPrefix(checks["mesh-missing"], clusters[2].Name+":") || !strings.HasPrefix(checks["mesh-broken"], clusters[1].Name+":") {
		t.Fatalf("mesh problems %v", checks)
	}
}
