package ca

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// recordingStore is a BundleStore that notes, for every Put, whether the bundle
// folder was already in place, and fails the clusters in fail.
type recordingStore struct {
	out      string
	fail     map[string]bool
	mu       sync.Mutex
	inPlace  map[string]bool
	checked  []string
	checkErr error
}

func (s *recordingStore) Check(_ context.Context, clusters []string) error {
	s.checked = clusters
	return s.checkErr
}

func (s *recordingStore) Put(_ context.Context, cluster string, files map[string][]byte) error {
	_, err := os.Stat(filepath.Join(s.out, cluster, CAKeyFile))
	s.mu.Lock()
	s.inPlace[cluster] = err == nil && len(files) == 4
	s.mu.Unlock()
	if s.fail[cluster] {
		return errors.New("permission denied")
	}
	return nil
}

// The store gets a bundle only once its folder is in place: a store that fails
// leaves the folder written and says so, and a store that refuses up front stops
// the run before anything is minted.
func TestMintDirStoresAfterTheFolder(t *testing.T) {
	ctx := context.Background()
	root := newRoot(t, DefaultRootProfile(""))
	out := filepath.Join(t.TempDir(), "bundles")
	store := &recordingStore{out: out, fail: map[string]bool{"west": true}, inPlace: map[string]bool{}}
	profiles := []Profile{IntermediateProfile("east", ""), IntermediateProfile("west", "")}
	res, err := MintDir(ctx, NewLocalIssuer(root), profiles, MintDirOptions{Out: out, Store: store})
	if err == nil || !strings.Contains(err.Error(), "1 of 2 clusters failed") {
		t.Fatalf("MintDir: %v", err)
	}
	if !store.inPlace["east"] || !store.inPlace["west"] {
		t.Fatalf("the store was given bundles before their folders were written: %v", store.inPlace)
	}
	if strings.Join(store.checked, ",") != "east,west" {
		t.Fatalf("Check saw %v", store.checked)
	}
	if res[0].Err != nil || res[1].Err == nil || !strings.Contains(res[1].Error, "bundle written to "+filepath.Join(out, "west")+", but not kept in the store: permission denied") {
		t.Fatalf("results: %+v", res)
	}
	for _, c := range []string{"east", "west"} {
		if _, err := ReadDir(filepath.Join(out, c)); err != nil {
			t.Errorf("%s: %v", c, err)
		}
	}

	// Refused up front: nothing minted, no folder made.
	out2 := filepath.Join(t.TempDir(), "bundles")
	refusing := &recordingStore{out: out2, inPlace: map[string]bool{}, checkErr: errors.New("bundle stored already")}
	_, err = MintDir(ctx, NewLocalIssuer(root), profiles, MintDirOptions{Out: out2, Store: refusing})
	if !errors.Is(err, ErrNotStarted) || len(refusing.inPlace) != 0 {
		t.Fatalf("refusing store: %v, puts %v", err, refusing.inPlace)
	}
	if _, err := os.Stat(out2); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the output folder was made for a refused run: %v", err)
	}
}

// Existing bundle folders are refused before anything is minted, naming them.
func TestMintDirRefusesExisting(t *testing.T) {
	root := newRoot(t, DefaultRootProfile(""))
	out := t.TempDir()
	if err := os.Mkdir(filepath.Join(out, "west"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := MintDir(context.Background(), NewLocalIssuer(root), []Profile{IntermediateProfile("east", ""), IntermediateProfile("west", "")}, MintDirOptions{Out: out})
	var ee *ExistsError
	if !errors.As(err, &ee) || !errors.Is(err, ErrExists) || !errors.Is(err, ErrNotStarted) || strings.Join(ee.Clusters, ",") != "west" {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "east")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("east was written although west's folder exists")
	}
}
