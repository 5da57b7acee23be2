package k8s

import (
	"errors"
	"fmt"
	"regexp"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// ForbiddenError is a request the cluster's RBAC refused.
type ForbiddenError struct {
	Cluster string
	// User is the user the API server saw, when it said so.
	User      string
	Verb      string
	Resource  string
	Namespace string
	// Err is the API server's answer.
	Err error
}

func (e *ForbiddenError) Error() string {
	where := "in namespace " + e.Namespace
	if e.Namespace == "" {
		where = "cluster-wide"
	}
	user := "the kubeconfig's user"
	if e.User != "" {
		user = fmt.Sprintf("user %q", e.User)
	}
	return fmt.Sprintf("forbidden: %s cannot %s %s %s of cluster %s (grant it meshpki's Role: deploy/rbac.yaml)",
		user, e.Verb, e.Resource, where, e.Cluster)
}

func (e *ForbiddenError) Unwrap() error { return e.Err }

var userRE = regexp.MustCompile(`User "([^"]*)" cannot`)

// apiError wraps an API error from request verb on resource with the cluster's
// name, turning an RBAC refusal into a ForbiddenError.
func apiError(cluster, verb, resource, namespace string, err error) error {
	if err == nil {
		return nil
	}
	var status apierrors.APIStatus
	if apierrors.IsForbidden(err) && errors.As(err, &status) {
		// Forbidden is also what a terminating namespace answers; only RBAC
		// refusals say which user cannot do what.
		if m := userRE.FindStringSubmatch(status.Status().Message); m != nil {
			return &ForbiddenError{Cluster: cluster, User: m[1], Verb: verb, Resource: resource, Namespace: namespace, Err: err}
		}
	}
	if namespace != "" {
		return fmt.Errorf("cluster %s: %s %s in namespace %s: %w", cluster, verb, resource, namespace, err)
	}
	return fmt.Errorf("cluster %s: %s %s: %w", cluster, verb, resource, err)
}
