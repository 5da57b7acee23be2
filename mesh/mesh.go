package mesh

import "github.com/meshpki/meshpki/k8s"

// namespaceOr is ns, or k8s.DefaultNamespace when empty.
func namespaceOr(ns string) string {
	if ns == "" {
		return k8s.DefaultNamespace
	}
	return ns
}
