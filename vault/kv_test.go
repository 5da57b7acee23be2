package vault

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/meshpki/meshpki/ca"
)

// kvPolicy allows what KV mode needs: read the root.
func kvPolicy(k KVPath) string {
	return `path "` + k.DataPath() + `" { capabilities = ["read"] }`
}

// KV mode end to end: a root made locally is stored with check-and-set, read back
// with a read-only token, and signs a mesh; storing again is refused and the first
// root stays as it was.
func TestKVModeEndToEnd(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	k := KVPath{Mount: "secret", Path: v.Unique("meshpki/root")}
	root, keyPEM, err := ca.CreateRoot(ca.DefaultRootProfile("Istio"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := StoreRootKV(ctx, admin.Logical(), k, root, keyPEM); err != nil {
		t.Fatal(err)
	}

	reader := tokenClient(t, v, policyToken(t, v, admin, kvPolicy(k), false))
	loaded, err := LoadRootKV(ctx, reader.Logical(), k, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(loaded.Cert.Raw, root.Cert.Raw) || !ca.KeyMatches(loaded.Signer, root.Cert.PublicKey) {
		t.Fatal("loaded root differs from the stored one")
	}
	bundles := mintAll(t, ca.NewLocalIssuer(loaded), profiles("east", "west", "north"))
	checkMesh(t, bundles)

	// A second root at the same path is refused; the first is intact.
	other, otherKey, err := ca.CreateRoot(ca.DefaultRootProfile("Istio"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	err = StoreRootKV(ctx, admin.Logical(), k, other, otherKey)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "a root is never overwritten") || !strings.Contains(err.Error(), k.String()) {
		t.Fatalf("second root: %v", err)
	}
	again, err := LoadRootKV(ctx, admin.Logical(), k, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Cert.Raw, root.Cert.Raw) {
		t.Fatal("the first root was replaced")
	}
	if n, err := KVVersion(ctx, admin.Logical(), k); err != nil || n != 1 {
		t.Fatalf("KVVersion = %d, %v; want 1", n, err)
	}
}

// Every way a KV root can be missing or wrong says which path and field, and never
// shows key material.
func TestKVRootErrors(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	root, keyPEM, err := ca.CreateRoot(ca.DefaultRootProfile("Istio"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := ca.CreateRoot(ca.DefaultRootProfile("Istio"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPEM := string(ca.EncodeCertificatesPEM(root.Cert))
	kv1 := v.Unique("kv1")
	if err := admin.Sys().MountWithContext(ctx, kv1, &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		fields map[string]any // nil: nothing stored
		path   *KVPath
		kind   error
		msg    []string
	}{
		{name: "no secret", kind: ErrSecretNotFound, msg: []string{"no secret at secret/"}},
		{name: "no such mount", path: &KVPath{Mount: v.Unique("nomount"), Path: "root"}, kind: ErrSecretNotFound, msg: []string{"no secret at nomount-"}},
		{name: "KV version 1 mount", path: &KVPath{Mount: kv1, Path: "root"}, kind: ErrSecretNotFound, msg: []string{"is " + kv1 + "/ a KV v2 mount?"}},
		{name: "no key field", fields: map[string]any{"certificate": certPEM}, kind: ErrMalformed, msg: []string{`has no field "private_key"`}},
		{name: "no certificate field", fields: map[string]any{"private_key": string(keyPEM)}, kind: ErrMalformed, msg: []string{`has no field "certificate"`}},
		{name: "certificate not PEM", fields: map[string]any{"certificate": "hello", "private_key": string(keyPEM)}, kind: ErrMalformed,
			msg: []string{`field "certificate": no PEM data found`}},
		{name: "key not PEM", fields: map[string]any{"certificate": certPEM, "private_key": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"}, kind: ErrMalformed,
			msg: []string{`field "private_key": no PEM data found`}},
		{name: "key of another root", fields: map[string]any{"certificate": certPEM, "private_key": string(otherKey)}, kind: ErrMalformed,
			msg: []string{`field "private_key": private key does not match`}},
		{name: "field not a string", fields: map[string]any{"certificate": 42, "private_key": string(keyPEM)}, kind: ErrMalformed,
			msg: []string{`field "certificate" is empty or not a string`}},
		{name: "not a CA", fields: map[string]any{"certificate": leafPEM(t, root), "private_key": string(keyPEM)}, kind: ErrMalformed,
			msg: []string{`field "certificate": certificate is not a CA`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := KVPath{Mount: "secret", Path: v.Unique("bad/root")}
			if tt.path != nil {
				k = *tt.path
			}
			if tt.fields != nil {
				if _, err := admin.Logical().WriteWithContext(ctx, k.DataPath(), map[string]any{"data": tt.fields}); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadRootKV(ctx, admin.Logical(), k, time.Now())
			if !errors.Is(err, tt.kind) {
				t.Fatalf("error %v is not %v", err, tt.kind)
			}
			for _, m := range append(tt.msg, k.Mount) {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not say %q", err, m)
				}
			}
			for _, secret := range []string{"PRIVATE KEY", string(keyPEM[40:80]), string(otherKey[40:80]), "MIIEvQIBADANBgkq"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error shows key material: %v", err)
				}
			}
		})
	}

	// A deleted secret is missing too; a root is not stored into a KV v1 mount.
	k := KVPath{Mount: "secret", Path: v.Unique("deleted/root")}
	if err := StoreRootKV(ctx, admin.Logical(), k, root, keyPEM); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Logical().DeleteWithContext(ctx, k.DataPath()); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRootKV(ctx, admin.Logical(), k, time.Now()); !errors.Is(err, ErrSecretNotFound) || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("deleted secret: %v", err)
	}
	if err := StoreRootKV(ctx, admin.Logical(), k, root, keyPEM); !errors.Is(err, ErrExists) {
		t.Errorf("storing over a deleted root: %v", err)
	}
	err = StoreRootKV(ctx, admin.Logical(), KVPath{Mount: kv1, Path: "root"}, root, keyPEM)
	if !errors.Is(err, ErrMountNotFound) || !strings.Contains(err.Error(), "is KV version 1, not KV version 2") {
		t.Errorf("KV v1: %v", err)
	}
	if s, _ := admin.Logical().ReadWithContext(ctx, kv1+"/data/root"); s != nil {
		t.Error("a root was written into the KV v1 mount")
	}
}

// leafPEM is a non-CA certificate signed by root.
func leafPEM(t *testing.T, root *ca.Root) string {
	t.Helper()
	b, err := ca.Mint(context.Background(), ca.NewLocalIssuer(root), hourProfile("leafy"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := b.IssueWorkload(ca.SPIFFEID("cluster.local", "ns", "sa"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return string(pemCert(w.Cert.Certificate[0]))
}

func TestParseKVPath(t *testing.T) {
	tests := []struct {
		in, mount, path, err string
	}{
		{in: "secret/meshpki/root", mount: "secret", path: "meshpki/root"},
		{in: "/kv/root/", mount: "kv", path: "root"},
		{in: "secret", err: "want MOUNT/PATH"},
		{in: "", err: "want MOUNT/PATH"},
		{in: "secret/data/meshpki/root", err: "without the API's /data/"},
		{in: "secret/a//b", err: "empty segments"},
		{in: "secret/a b", err: "spaces"},
	}
	for _, tt := range tests {
		k, err := ParseKVPath(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || k.Mount != tt.mount || k.Path != tt.path {
			t.Errorf("%q: got %+v, %v", tt.in, k, err)
		}
	}
	k := KVPath{Mount: "secret", Path: "mesh/bundles"}
	if k.DataPath() != "secret/data/mesh/bundles" || k.MetadataPath() != "secret/metadata/mesh/bundles" || k.Child("east").String() != "secret/mesh/bundles/east" {
		t.Errorf("paths: %s %s %s", k.DataPath(), k.MetadataPath(), k.Child("east"))
	}
}

// Bundles kept in KV: check-and-set 0 writes only new secrets; replacing needs the
// current version.
func TestStoreBundle(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	base := KVPath{Mount: "secret", Path: v.Unique("mesh/bundles")}
	root, _, err := ca.CreateRoot(ca.DefaultRootProfile(""), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.Mint(ctx, ca.NewLocalIssuer(root), hourProfile("east"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := b.Files(ca.FormatIstio)
	if err != nil {
		t.Fatal(err)
	}
	policy := `path "` + base.Mount + `/data/` + base.Path + `/*" { capabilities = ["create"] }`
	writer := tokenClient(t, v, policyToken(t, v, admin, policy, false))
	n, err := StoreBundle(ctx, writer.Logical(), base, "east", files, 0)
	if err != nil || n != 1 {
		t.Fatalf("StoreBundle = %d, %v", n, err)
	}
	s, err := admin.Logical().ReadWithContext(ctx, base.Child("east").DataPath())
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string][]byte{}
	for name, v := range s.Data["data"].(map[string]any) {
		stored[name] = []byte(v.(string))
	}
	if rep := ca.Verify(stored, ca.VerifyOptions{}); !rep.OK() {
		t.Fatalf("stored bundle does not verify: %v", rep.Err())
	}

	if _, err := StoreBundle(ctx, admin.Logical(), base, "east", files, 0); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second store with cas 0: %v", err)
	}
	// A create-only policy meets the existing secret as a 403 (Vault checks "update").
	if _, err := StoreBundle(ctx, writer.Logical(), base, "east", files, 0); !errors.Is(err, ErrPermissionDenied) ||
		!strings.Contains(err.Error(), `exists already, Vault checks "update"`) {
		t.Fatalf("second store with cas 0, create-only: %v", err)
	}
	// Replacing needs "update", which this writer lacks.
	if _, err := StoreBundle(ctx, writer.Logical(), base, "east", files, 1); !errors.Is(err, ErrPermissionDenied) ||
		!strings.Contains(err.Error(), `"update" on `+base.Child("east").DataPath()) {
		t.Fatalf("replace without update: %v", err)
	}
	if n, err := StoreBundle(ctx, admin.Logical(), base, "east", files, 1); err != nil || n != 2 {
		t.Fatalf("replace version 1 = %d, %v", n, err)
	}
	if _, err := StoreBundle(ctx, admin.Logical(), base, "east", files, 1); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "changed since version 1") {
		t.Fatalf("stale version: %v", err)
	}
	if n, err := KVVersion(ctx, admin.Logical(), base.Child("east")); err != nil || n != 2 {
		t.Fatalf("KVVersion = %d, %v", n, err)
	}
	if n, err := KVVersion(ctx, admin.Logical(), base.Child("west")); err != nil || n != 0 {
		t.Fatalf("KVVersion of a missing secret = %d, %v", n, err)
	}
}
