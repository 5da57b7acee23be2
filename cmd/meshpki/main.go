// Command meshpki mints per-cluster intermediate CAs from one shared root and
// bundles them as Istio's cacerts. Run "meshpki help" for the commands.
package main

import "os"

func main() {
	setupLibraries()
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
