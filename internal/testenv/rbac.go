package testenv

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
)

// ApplyRBAC creates the Role and RoleBinding called name of the RBAC manifest file
// (deploy/rbac.yaml) in namespace ns, bound to LimitedUser, and waits until the
// API server applies them.
func ApplyRBAC(ctx context.Context, admin kubernetes.Interface, file, ns, name string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	found := 0
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if strings.TrimSpace(doc) == "" || !strings.Contains(doc, "kind:") {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		switch o := obj.(type) {
		case *rbacv1.Role:
			if o.Name != name {
				continue
			}
			o.Namespace = ns
			_, err = admin.RbacV1().Roles(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			if o.Name != name {
				continue
			}
			o.Namespace = ns
			o.Subjects = []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: LimitedUser}}
			_, err = admin.RbacV1().RoleBindings(ns).Create(ctx, o, metav1.CreateOptions{})
		default:
			continue
		}
		if err != nil {
			return err
		}
		found++
	}
	if found != 2 {
		return fmt.Errorf("%s: found %d objects named %s, want a Role and a RoleBinding", file, found, name)
	}
	// RBAC is read through an informer: wait until it applies.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ok, err := canI(ctx, admin, ns, name)
		if err == nil && ok {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("RBAC %s did not take effect", name)
}

// canI asks the API server whether LimitedUser may do what role grants.
func canI(ctx context.Context, admin kubernetes.Interface, ns, role string) (bool, error) {
	ra := &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "secrets", Name: "cacerts"}
	if role == "meshpki-install" {
		ra = &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "patch", Group: "apps", Resource: "deployments", Name: "istiod"}
	}
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: LimitedUser, ResourceAttributes: ra}}
	out, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return out.Status.Allowed, nil
}
