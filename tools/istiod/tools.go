//go:build tools

// Package tools pins istiod (pilot-discovery) from istio.io/istio for meshpki's tests.
package tools

import _ "istio.io/istio/pilot/cmd/pilot-discovery"
