package k8s

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/meshpki/meshpki/ca"
)

func writeKubeconfig(t *testing.T, name string, contexts ...string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	for i, c := range contexts {
		cfg.Clusters[c] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:" + string(rune('1'+i)) + "443"}
		cfg.AuthInfos[c] = &clientcmdapi.AuthInfo{Token: "t"}
		cfg.Contexts[c] = &clientcmdapi.Context{Cluster: c, AuthInfo: c}
	}
	path := filepath.Join(t.TempDir(), name)
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func names(cls []*Cluster) string {
	var out []string
	for _, c := range cls {
		out = append(out, c.Context+"="+c.Name)
	}
	return strings.Join(out, ",")
}

func TestLoadClusters(t *testing.T) {
	a := writeKubeconfig(t, "a", "west", "east")
	b := writeKubeconfig(t, "b", "north", "east")

	cls, err := LoadClusters(ClusterOptions{Kubeconfig: a, AllContexts: true})
	if err != nil || names(cls) != "east=east,west=west" {
		t.Fatalf("all contexts: %s, %v", names(cls), err)
	}
	if cls[0].Server != "https://127.0.0.1:2443" || cls[0].Client == nil {
		t.Fatalf("cluster %+v", cls[0])
	}
	// Several files as $KUBECONFIG lists them: merged, first file wins, missing skipped.
	cls, err = LoadClusters(ClusterOptions{Paths: []string{a, filepath.Join(t.TempDir(), "missing"), b}, AllContexts: true})
	if err != nil || names(cls) != "east=east,north=north,west=west" {
		t.Fatalf("merged: %s, %v", names(cls), err)
	}
	if cls[0].Server != "https://127.0.0.1:2443" {
		t.Fatalf("east from the second file, want the first: %s", cls[0].Server)
	}
	// Chosen contexts keep their order; names can be mapped.
	cls, err = LoadClusters(ClusterOptions{Paths: []string{a, b}, Contexts: []string{"north", "west"}, Names: map[string]string{"west": "us-west-1"}})
	if err != nil || names(cls) != "north=north,west=us-west-1" {
		t.Fatalf("chosen: %s, %v", names(cls), err)
	}

	for _, tc := range []struct {
		name string
		opts ClusterOptions
		want string
	}{
		{"unknown context", ClusterOptions{Kubeconfig: a, Contexts: []string{"south"}}, `no such kubeconfig context "south" in ` + a + " (it has contexts east, west)"},
		{"none chosen", ClusterOptions{Kubeconfig: a}, "no context chosen"},
		{"both", ClusterOptions{Kubeconfig: a, Contexts: []string{"east"}, AllContexts: true}, "not both"},
		{"twice", ClusterOptions{Kubeconfig: a, Contexts: []string{"east", "east"}}, `"east" chosen twice`},
		{"name clash", ClusterOptions{Kubeconfig: a, AllContexts: true, Names: map[string]string{"west": "east"}}, `both map to cluster "east"`},
		{"map unchosen", ClusterOptions{Kubeconfig: a, Contexts: []string{"east"}, Names: map[string]string{"west": "w"}}, `context "west", which is not among`},
		{"bad name", ClusterOptions{Kubeconfig: a, Contexts: []string{"east"}, Names: map[string]string{"east": "a/b"}}, "only letters"},
		{"missing file", ClusterOptions{Kubeconfig: filepath.Join(t.TempDir(), "nope"), AllContexts: true}, "load kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadClusters(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := LoadClusters(ClusterOptions{Kubeconfig: a, Contexts: []string{"x"}}); !errors.Is(err, ErrNoContext) {
		t.Fatalf("got %v, want ErrNoContext", err)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("::: not yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadClusters(ClusterOptions{Kubeconfig: bad, AllContexts: true}); err == nil {
		t.Fatal("a malformed kubeconfig loaded")
	}
}

// A kubeconfig that is a FIFO or a device is refused at once, naming it, instead
// of blocking client-go's read (or filling memory from /dev/zero).
func TestLoadClustersRefusesOddFiles(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "kubeconfig")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	for _, opts := range []ClusterOptions{{Kubeconfig: fifo}, {Paths: []string{fifo}}, {Kubeconfig: "/dev/zero"}} {
		done := make(chan error, 1)
		go func() { _, err := LoadClusters(opts); done <- err }()
		select {
		case err := <-done:
			name := opts.Kubeconfig
			if name == "" {
				name = opts.Paths[0]
			}
			if !errors.Is(err, ca.ErrNotRegular) || !strings.Contains(err.Error(), name) {
				t.Errorf("%+v: %v, want a not-a-regular-file error naming it", opts, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%+v: LoadClusters still reading after 10 s", opts)
		}
	}
}
