package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/meshpki/meshpki/ca"
)

// Field names of a root (or signing CA) kept in a KV v2 secret.
const (
	FieldCertificate = "certificate"
	FieldPrivateKey  = "private_key"
	// FieldCAChain (optional) holds, for an issuing CA below the root, the chain
	// from its issuer up to and including the root, PEM, nearest first: the field
	// Vault's own PKI answers carry.
	FieldCAChain = "ca_chain"
)

// KVPath names a KV v2 secret: Mount "secret" and Path "meshpki/root" is what
// `vault kv get secret/meshpki/root` reads (API path secret/data/meshpki/root).
type KVPath struct {
	Mount string
	Path  string
}

// ParseKVPath parses "MOUNT/PATH", the form `vault kv get` takes; the mount is the
// first segment.
func ParseKVPath(s string) (KVPath, error) {
	mount, path, _ := strings.Cut(strings.Trim(s, "/"), "/")
	path = strings.Trim(path, "/")
	if mount == "" || path == "" {
		return KVPath{}, fmt.Errorf("KV path %q: want MOUNT/PATH, e.g. secret/meshpki/root", s)
	}
	if strings.HasPrefix(path, "data/") || strings.HasPrefix(path, "metadata/") {
		return KVPath{}, fmt.Errorf("KV path %q: give MOUNT/PATH as for `vault kv get` (e.g. %s/%s), without the API's /data/ or /metadata/",
			s, mount, path[strings.Index(path, "/")+1:])
	}
	if strings.ContainsAny(s, " \t\n?#") || strings.Contains(path, "//") {
		return KVPath{}, fmt.Errorf("KV path %q contains spaces, URL characters or empty segments", s)
	}
	return KVPath{Mount: mount, Path: path}, nil
}

func (k KVPath) String() string { return k.Mount + "/" + k.Path }

// DataPath is the API path of the secret's data: MOUNT/data/PATH.
func (k KVPath) DataPath() string { return k.Mount + "/data/" + k.Path }

// MetadataPath is the API path of the secret's metadata: MOUNT/metadata/PATH.
func (k KVPath) MetadataPath() string { return k.Mount + "/metadata/" + k.Path }

// Child is the secret PATH/name under k.
func (k KVPath) Child(name string) KVPath { return KVPath{Mount: k.Mount, Path: k.Path + "/" + name} }

// CheckKVv2 checks that a KV version 2 engine is mounted at mount (through
// sys/internal/ui/mounts, which any token with access to the mount may read). When
// Vault does not say, it passes.
func CheckKVv2(ctx context.Context, l Logical, mount string) error {
	mount = strings.Trim(mount, "/")
	path := "sys/internal/ui/mounts/" + mount
	s, err := l.ReadWithContext(ctx, path)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && (re.StatusCode == http.StatusForbidden && !hasMessage(re, "invalid token") || re.StatusCode == http.StatusBadRequest) {
			return nil // not allowed to ask, or an older Vault: the real call will tell
		}
		return describe(err, "read", path)
	}
	if s == nil || s.Data == nil {
		return nil
	}
	typ, _ := s.Data["type"].(string)
	version := ""
	if opts, ok := s.Data["options"].(map[string]any); ok {
		version, _ = opts["version"].(string)
	}
	if typ == "" {
		return nil
	}
	if (typ != "kv" && typ != "generic") || version != "2" {
		if version == "" {
			version = "1"
		}
		what := fmt.Sprintf("a %s engine", typ)
		if typ == "kv" || typ == "generic" {
			what = "KV version " + version
		}
		return &Error{Kind: ErrMountNotFound, Path: path,
			Msg: fmt.Sprintf("Vault mount %s/ is %s, not KV version 2 (enable one: vault secrets enable -path=%s kv-v2)", mount, what, mount)}
	}
	return nil
}

// readKV returns the fields of the secret's current version.
func readKV(ctx context.Context, l Logical, k KVPath) (map[string]any, error) {
	path := k.DataPath()
	s, err := l.ReadWithContext(ctx, path)
	if err != nil {
		return nil, describe(err, "read", path)
	}
	if s == nil {
		return nil, &Error{Kind: ErrSecretNotFound, Path: path,
			Msg: fmt.Sprintf("no secret at %s in Vault (read %s; is %s/ a KV v2 mount?)", k, path, k.Mount)}
	}
	data, _ := s.Data["data"].(map[string]any)
	if data == nil {
		return nil, &Error{Kind: ErrSecretNotFound, Path: path,
			Msg: fmt.Sprintf("the current version of secret %s in Vault is deleted or destroyed", k)}
	}
	return data, nil
}

// stringField returns a string field of a KV secret. Errors name the field, never
// its value.
func stringField(k KVPath, data map[string]any, field string) ([]byte, error) {
	v, ok := data[field]
	if !ok {
		return nil, &Error{Kind: ErrMalformed, Path: k.DataPath(),
			Msg: fmt.Sprintf("Vault secret %s has no field %q (meshpki expects %q and %q, PEM)", k, field, FieldCertificate, FieldPrivateKey)}
	}
	s, ok := v.(string)
	if !ok || strings.TrimSpace(s) == "" {
		return nil, &Error{Kind: ErrMalformed, Path: k.DataPath(),
			Msg: fmt.Sprintf("Vault secret %s: field %q is empty or not a string", k, field)}
	}
	return []byte(s), nil
}

// LoadRootKV reads a root kept in a KV v2 secret (fields "certificate" and
// "private_key", PEM) with ca.ParseRoot, the parser of root folders too. Errors name
// the path and the field, never the key.
func LoadRootKV(ctx context.Context, l Logical, k KVPath, now time.Time) (*ca.Root, error) {
	_, certPEM, keyPEM, err := readCertKey(ctx, l, k)
	if err != nil {
		return nil, err
	}
	root, err := ca.ParseRoot(certPEM, keyPEM, now)
	if err != nil {
		return nil, kvRootError(k, err)
	}
	return root, nil
}

// LoadSigningCAKV reads the CA that signs cluster intermediates from a KV v2
// secret: a root (fields "certificate" and "private_key") as LoadRootKV reads it,
// or an issuing CA below the root, whose "ca_chain" field holds the chain up to the
// root (ca.ParseSigningCA's rules). Errors name the path and the field, never the
// key.
func LoadSigningCAKV(ctx context.Context, l Logical, k KVPath, now time.Time) (*ca.SigningCA, error) {
	data, certPEM, keyPEM, err := readCertKey(ctx, l, k)
	if err != nil {
		return nil, err
	}
	var chainPEM []byte
	switch v := data[FieldCAChain].(type) {
	case nil:
	case string:
		chainPEM = []byte(v)
	case []any: // as Vault's PKI answers write it: one PEM string per certificate
		for i, c := range v {
			str, ok := c.(string)
			if !ok {
				return nil, &Error{Kind: ErrMalformed, Path: k.DataPath(), Msg: fmt.Sprintf("Vault secret %s: field %q: entry %d is not a string", k, FieldCAChain, i)}
			}
			chainPEM = append(append(chainPEM, str...), '\n')
		}
	default:
		return nil, &Error{Kind: ErrMalformed, Path: k.DataPath(), Msg: fmt.Sprintf("Vault secret %s: field %q is not a PEM string", k, FieldCAChain)}
	}
	sc, err := ca.ParseSigningCA(certPEM, keyPEM, chainPEM, nil, now)
	if err != nil {
		return nil, kvRootError(k, err)
	}
	return sc, nil
}

// readCertKey reads the secret at k and its certificate and private_key fields.
func readCertKey(ctx context.Context, l Logical, k KVPath) (data map[string]any, certPEM, keyPEM []byte, err error) {
	if data, err = readKV(ctx, l, k); err != nil {
		return nil, nil, nil, err
	}
	if certPEM, err = stringField(k, data, FieldCertificate); err != nil {
		return nil, nil, nil, err
	}
	if keyPEM, err = stringField(k, data, FieldPrivateKey); err != nil {
		return nil, nil, nil, err
	}
	return data, certPEM, keyPEM, nil
}

// kvRootError names the field of k a *ca.RootError is about.
func kvRootError(k KVPath, err error) error {
	field, cause := FieldCertificate, err
	var re *ca.RootError
	if errors.As(err, &re) {
		cause = re.Err
		switch re.Part {
		case ca.RootPartKey:
			field = FieldPrivateKey
		case ca.PartChain, ca.PartRoots:
			field = FieldCAChain
		}
	}
	return &Error{Kind: ErrMalformed, Path: k.DataPath(), Err: cause,
		Msg: fmt.Sprintf("Vault secret %s: field %q: %v", k, field, cause)}
}

// StoreRootKV stores a root in a new KV v2 secret with check-and-set 0: it fails with
// ErrExists, and changes nothing, when the secret exists (even deleted).
func StoreRootKV(ctx context.Context, l Logical, k KVPath, root *ca.Root, keyPEM []byte) error {
	key, err := ca.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return fmt.Errorf("root key: %w", err)
	}
	if !ca.KeyMatches(key, root.Cert.PublicKey) {
		return fmt.Errorf("root key: %w", ca.ErrKeyMismatch)
	}
	if err := CheckKVv2(ctx, l, k.Mount); err != nil {
		return err
	}
	_, err = writeKV(ctx, l, k, map[string]any{
		FieldCertificate: string(ca.EncodeCertificatesPEM(root.Cert)),
		FieldPrivateKey:  string(keyPEM),
	}, 0)
	if errors.Is(err, ErrExists) {
		return &Error{Kind: ErrExists, Path: k.DataPath(), Err: err,
			Msg: fmt.Sprintf("a secret already exists at %s in Vault: a root is never overwritten; choose another path", k)}
	}
	return err
}

// KVVersion returns the current version of a KV v2 secret, 0 when there is none.
// It reads the metadata (policy: "read" on MOUNT/metadata/PATH).
func KVVersion(ctx context.Context, l Logical, k KVPath) (int, error) {
	path := k.MetadataPath()
	s, err := l.ReadWithContext(ctx, path)
	if err != nil {
		return 0, describe(err, "read", path)
	}
	if s == nil || s.Data == nil {
		return 0, nil
	}
	v, err := jsonInt(s.Data["current_version"])
	if err != nil {
		return 0, &Error{Kind: ErrMalformed, Path: path, Err: err, Msg: fmt.Sprintf("%s: field current_version: %v", path, err)}
	}
	return int(v), nil
}

// StoreBundle keeps one cluster's bundle files (file name -> content) in the KV v2
// secret PATH/<cluster> under base, with check-and-set cas: 0 writes only a new
// secret, n > 0 replaces version n and nothing else. It returns the new version.
func StoreBundle(ctx context.Context, l Logical, base KVPath, cluster string, files map[string][]byte, cas int) (int, error) {
	if err := ca.ValidateClusterName(cluster); err != nil {
		return 0, err
	}
	fields := make(map[string]any, len(files))
	for name, b := range files {
		fields[name] = string(b)
	}
	return writeKV(ctx, l, base.Child(cluster), fields, cas)
}

// writeKV writes fields as a new version of k with check-and-set cas.
func writeKV(ctx context.Context, l Logical, k KVPath, fields map[string]any, cas int) (int, error) {
	path := k.DataPath()
	capability := "create"
	if cas > 0 {
		capability = "update"
	}
	s, err := l.WriteWithContext(ctx, path, map[string]any{"options": map[string]any{"cas": cas}, "data": fields})
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && hasMessage(re, "check-and-set") {
			msg := fmt.Sprintf("a secret already exists at %s in Vault (check-and-set 0 refused it)", k)
			if cas > 0 {
				msg = fmt.Sprintf("secret %s in Vault changed since version %d was read (check-and-set refused it): retry", k, cas)
			}
			return 0, &Error{Kind: ErrExists, Path: path, Capability: capability, Msg: msg, Err: err}
		}
		err = describe(err, capability, path)
		var ve *Error
		if cas == 0 && errors.As(err, &ve) && errors.Is(err, ErrPermissionDenied) {
			ve.Msg += fmt.Sprintf(" (if %s exists already, Vault checks \"update\" instead: meshpki would not replace it anyway)", k)
		}
		return 0, err
	}
	if s == nil || s.Data == nil {
		return 0, &Error{Kind: ErrMalformed, Path: path,
			Msg: fmt.Sprintf("Vault's answer to writing %s has no version: is %s/ a KV version 2 mount?", path, k.Mount)}
	}
	v, err := jsonInt(s.Data["version"])
	if err != nil {
		return 0, &Error{Kind: ErrMalformed, Path: path, Err: err, Msg: fmt.Sprintf("%s: field version: %v", path, err)}
	}
	return int(v), nil
}

// jsonInt reads a JSON number as the api package decodes it.
func jsonInt(v any) (int64, error) {
	switch n := v.(type) {
	case json.Number:
		return n.Int64()
	case float64:
		return int64(n), nil
	case int:
		return int64(n), nil
	case int64:
		return n, nil
	case string:
		return strconv.ParseInt(n, 10, 64)
	}
	return 0, fmt.Errorf("not a number: %T", v)
}
