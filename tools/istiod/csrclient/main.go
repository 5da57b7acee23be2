// csrclient asks a running istiod's CA (gRPC on its secure port) to sign a workload CSR
// exactly as istio-agent does (security/pkg/nodeagent/caclient/providers/citadel), with a
// Kubernetes service-account token as its credential. The workload key and the returned
// chain (leaf, intermediate, roots) are written to files: the key 0600, never printed.
//
// Usage: csrclient -addr HOST:PORT -root ROOT_CERT_FILE -token TOKEN_FILE -spiffe URI
//
//	-cluster ID -key OUT_KEY -chain OUT_CHAIN [-ttl 1h]
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"istio.io/istio/pkg/security"
	"istio.io/istio/security/pkg/nodeagent/caclient/providers/citadel"
	"istio.io/istio/security/pkg/pki/util"
)

type staticToken string

func (t staticToken) GetPlatformCredential() (string, error) { return string(t), nil }
func (t staticToken) GetIdentityProvider() string            { return "" }
func (t staticToken) Stop()                                  {}

func main() {
	addr := flag.String("addr", "", "istiod CA address (secure gRPC port)")
	rootFile := flag.String("root", "", "file holding the roots istiod published (istio-ca-root-cert)")
	tokenFile := flag.String("token", "", "file holding a service-account token with audience istio-ca")
	spiffe := flag.String("spiffe", "", "SPIFFE ID of the workload")
	cluster := flag.String("cluster", "", "cluster ID of the istiod")
	keyOut := flag.String("key", "", "where to write the workload key")
	chainOut := flag.String("chain", "", "where to write the signed chain")
	ttl := flag.Duration("ttl", time.Hour, "requested certificate lifetime")
	flag.Parse()
	if err := run(*addr, *rootFile, *tokenFile, *spiffe, *cluster, *keyOut, *chainOut, *ttl); err != nil {
		fmt.Fprintln(os.Stderr, "csrclient:", err)
		os.Exit(1)
	}
}

func run(addr, rootFile, tokenFile, spiffe, cluster, keyOut, chainOut string, ttl time.Duration) error {
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return err
	}
	opts := &security.Options{CAEndpoint: addr, ClusterID: cluster, CredFetcher: staticToken(strings.TrimSpace(string(tok))), CAEndpointSAN: "istiod.istio-system.svc"}
	c, err := citadel.NewCitadelClient(opts, &citadel.TLSOptions{RootCert: rootFile})
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer c.Close()
	csr, key, err := util.GenCSR(util.CertOptions{Host: spiffe, ECSigAlg: util.EcdsaSigAlg, ECCCurve: util.P256Curve})
	if err != nil {
		return fmt.Errorf("csr: %w", err)
	}
	chain, err := c.CSRSign(csr, int64(ttl/time.Second))
	if err != nil {
		return fmt.Errorf("CSRSign: %w", err)
	}
	if err := os.WriteFile(keyOut, key, 0o600); err != nil {
		return err
	}
	var b strings.Builder
	for _, p := range chain {
		b.WriteString(p)
		if !strings.HasSuffix(p, "\n") {
			b.WriteString("\n")
		}
	}
	return os.WriteFile(chainOut, []byte(b.String()), 0o644)
}
