// bundlecheck loads a cacerts folder with istiod's own loader for plugged-in CA certs
// (istio.io/istio security/pkg/pki/util.NewVerifiedKeyCertBundleFromFile, as
// pilot/pkg/bootstrap/istio_ca.go calls it) and prints "ok" or istiod's error. Exit 1 when
// istiod would refuse the folder. Both the Istio layout (ca-cert.pem, ...) and the tls.*
// layout (tls.crt, tls.key, ca.crt) are read as istiod reads them.
//
// Usage: bundlecheck DIR
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"istio.io/istio/security/pkg/pki/util"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: bundlecheck DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	p := func(n string) string { return filepath.Join(dir, n) }
	// As detectSigningCABundleAndCRL in pilot/pkg/bootstrap/istio_ca.go.
	cert, key, chain, root := p("ca-cert.pem"), p("ca-key.pem"), []string{p("cert-chain.pem")}, p("root-cert.pem")
	if _, err := os.Stat(p("tls.crt")); err == nil {
		cert, key, chain, root = p("tls.crt"), p("tls.key"), []string{p("tls.crt"), p("ca.crt")}, p("ca.crt")
	}
	crl := ""
	if _, err := os.Stat(filepath.Join(dir, "ca-crl.pem")); err == nil {
		crl = filepath.Join(dir, "ca-crl.pem")
	}
	if _, err := util.NewVerifiedKeyCertBundleFromFile(cert, key, chain, root, crl); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ok")
}
