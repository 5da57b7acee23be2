// Package kms opens the key of a root or issuing CA that lives in an HSM or a
// key service and signs there: the private key never enters this process, which
// holds a crypto.Signer that asks the token (or the service) for each signature.
//
// A key is named by a URI, as smallstep's go.step.sm/crypto/kms names it:
//
//	pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=mesh;id=2026;object=root-2026?pin-source=/run/secrets/pin
//	awskms:key-id=arn:aws:kms:eu-west-1:111122223333:key/...;region=eu-west-1
//	cloudkms:projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/1
//	azurekms:vault=V;name=K;version=...
//
// PKCS#11 (every HSM: Thales Luna, Entrust nShield, YubiHSM 2, AWS CloudHSM,
// SoftHSM2 ...) goes through ThalesGroup/crypto11 and needs cgo: a build without
// cgo (meshpki's static release binaries) refuses pkcs11 URIs with ErrNotCompiled.
// Which cloud services a build holds is in cloud.go.
//
// PINs never travel in a URI's value: a URI with pin-value is refused. The PIN comes
// from the file the URI's pin-source names, or from Options.PIN, which the caller
// reads (meshpki: the environment variable MESHPKI_PKCS11_PIN). The package reads no
// environment variable of meshpki's (the cloud SDKs read their own credentials').
//
// Create makes one key at a time per user on the machine (a lock in the temporary
// folder), and never gives two keys of a token one id or label.
package kms

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/uri"

	// PKCS#11 (cgo; without it a stub that refuses).
	_ "go.step.sm/crypto/kms/pkcs11"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/atomicfs"
)

// Errors a key can fail with; each is wrapped with the URI (and the library's own
// words) so errors.Is finds it.
var (
	// ErrNotCompiled: this build has no backend for the URI's scheme (PKCS#11
	// in a build without cgo, or a cloud KMS left out).
	ErrNotCompiled = errors.New("this meshpki build cannot reach that kind of key")
	// ErrScheme: the text is not a key URI meshpki knows.
	ErrScheme = errors.New("not a key URI (pkcs11:, awskms:, cloudkms: or azurekms:)")
	// ErrURI: the URI does not parse, or lacks what its scheme needs.
	ErrURI = errors.New("bad key URI")
	// ErrPINInURI: the URI carries a secret itself (pin-value, a client secret).
	ErrPINInURI = errors.New("a secret in the URI (a PIN in pin-value, or a client secret): secrets must not appear on command lines or in files that name keys; put a PIN in a file named by pin-source=FILE, or in MESHPKI_PKCS11_PIN, and leave cloud credentials to the cloud SDK's environment")
	// ErrPINSource: the file pin-source names cannot be read or is empty.
	ErrPINSource = errors.New("cannot read the PIN file (pin-source)")
	// ErrModule: the PKCS#11 module (module-path) does not load.
	ErrModule = errors.New("the PKCS#11 module does not load")
	// ErrToken: no token with that label, serial or slot.
	ErrToken = errors.New("no such PKCS#11 token")
	// ErrPIN: the token refused the PIN (wrong, or locked after too many tries).
	ErrPIN = errors.New("the token refused the PIN")
	// ErrNotFound: the token or service holds no key at the URI.
	ErrNotFound = errors.New("no key at that URI")
	// ErrExists: Create found a key at the URI already.
	ErrExists = errors.New("a key already exists at that URI")
	// ErrKeyType: the key is of a type meshpki's CAs cannot use.
	ErrKeyType = errors.New("the key is not of a type a mesh CA can use")
)

// Options controls Open and Create.
type Options struct {
	// PIN logs in to a PKCS#11 token whose URI names no pin-source. The caller
	// reads it from wherever it keeps it; it is never logged.
	PIN string
}

// Key is a CA key held in an HSM or a key service. Its Sign asks the token or the
// service; Close ends the session (the token logs out).
type Key struct {
	crypto.Signer
	uri string
	km  apiv1.KeyManager
}

// URI is the key's URI, as given.
func (k *Key) URI() string { return k.uri }

// Close releases the connection to the token or service.
func (k *Key) Close() error {
	if k == nil || k.km == nil {
		return nil
	}
	return k.km.Close()
}

// Destroy deletes the key from its token, for a key Create made that is not used
// after all (its certificate could not be written); then it closes the session.
func (k *Key) Destroy() error {
	// The object this Key holds, by its handle (crypto11's Delete), never a key
	// looked up again by its URI, which could be another's.
	d, ok := k.Signer.(interface{ Delete() error })
	if !ok {
		k.Close()
		return fmt.Errorf("%s: this kind of key cannot be deleted by meshpki", Redact(k.uri))
	}
	err := d.Delete()
	if cerr := k.Close(); err == nil {
		err = cerr
	}
	return err
}

// IsURI reports whether s names a key by URI (a known scheme), rather than a file.
func IsURI(s string) bool {
	scheme, _, ok := strings.Cut(s, ":")
	if !ok {
		return false
	}
	switch apiv1.Type(strings.ToLower(scheme)) {
	case apiv1.PKCS11, apiv1.AmazonKMS, apiv1.CloudKMS, apiv1.AzureKMS:
		return true
	}
	return false
}

// Check parses uri and refuses what Open would refuse before it reaches a token:
// an unknown scheme, a secret inside the URI (a PIN, a client secret), an
// unreadable pin-source, a PKCS#11 URI that names no token or no key, a bad
// max-sessions. Its errors never hold the URI's text, only Redact's description.
func Check(rawURI string) error {
	_, err := check(rawURI)
	return err
}

// CheckCreate is Check for a key Create would make: a pkcs11 URI with both id and
// object.
func CheckCreate(rawURI string) error {
	c, err := check(rawURI)
	if err != nil {
		return err
	}
	return c.canCreate()
}

// secretAttr reports whether a URI attribute named key carries a secret: a PIN or
// a password, or a cloud client secret, which the library would read from the URI.
func secretAttr(key string) bool {
	k := strings.ToLower(key)
	for _, s := range []string{"pin-value", "secret", "password", "passphrase"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// checked is a key URI that passed check.
type checked struct {
	typ apiv1.Type
	u   *uri.URI
	// lib is the URI the library gets: a pkcs11 URI without pin-source, whose
	// file meshpki reads itself (pin), so that the file checked is the file read.
	lib string
	pin string
	// desc is the URI for messages (Redact).
	desc string
}

// attrs are the attribute=value fields of a URI's opaque part (split on ;) and
// of its query (split on &), undecoded, in order.
func attrs(rawURI string) (scheme string, opaque, query []string) {
	scheme, rest, _ := strings.Cut(rawURI, ":")
	rest, _, _ = strings.Cut(rest, "#")
	op, q, _ := strings.Cut(rest, "?")
	split := func(s, sep string) []string {
		var out []string
		for _, f := range strings.Split(s, sep) {
			if f != "" {
				out = append(out, f)
			}
		}
		return out
	}
	// The library splits the opaque part on & as well; a ; in the query is no
	// separator to net/url, which drops the pair, but it is read as one here so
	// that nothing after it escapes the checks.
	return scheme, split(strings.ReplaceAll(op, "&", ";"), ";"), split(strings.ReplaceAll(q, ";", "&"), "&")
}

// fieldKey is the decoded attribute name of a field.
func fieldKey(f string) string {
	k, _, _ := strings.Cut(f, "=")
	if d, err := url.QueryUnescape(k); err == nil {
		return d
	}
	return k
}

func check(rawURI string) (*checked, error) {
	if !IsURI(rawURI) {
		return nil, ErrScheme
	}
	scheme, opaque, query := attrs(rawURI)
	if strings.Contains(rawURI, "#") {
		return nil, fmt.Errorf("%w: a %s: URI has no #fragment (a label with # in it is written %%23)", ErrURI, strings.ToLower(scheme))
	}
	for _, f := range append(append([]string{}, opaque...), query...) {
		rawKey, _, _ := strings.Cut(f, "=")
		if secretAttr(fieldKey(f)) || secretAttr(rawKey) { // names only: a value (a path under /run/secrets) is no secret
			return nil, fmt.Errorf("the %s: URI: %w", strings.ToLower(scheme), ErrPINInURI)
		}
	}
	u, err := uri.Parse(rawURI)
	if err != nil {
		// The library's and net/url's words quote the URI: not repeated here.
		return nil, fmt.Errorf("%w: the %s: URI does not parse: check its percent-escapes and its attribute=value pairs (separated by ; and, after ?, by &)", ErrURI, strings.ToLower(scheme))
	}
	for _, vs := range []url.Values{u.Values, u.URL.Query()} {
		for k := range vs {
			if secretAttr(k) {
				return nil, fmt.Errorf("the %s: URI: %w", strings.ToLower(scheme), ErrPINInURI)
			}
		}
	}
	c := &checked{typ: apiv1.Type(strings.ToLower(u.Scheme)), u: u, lib: rawURI, desc: describe(rawURI)}
	if c.typ != apiv1.PKCS11 {
		return c, nil
	}
	if u.Get("token") == "" && u.Get("serial") == "" && u.Get("slot-id") == "" {
		return nil, fmt.Errorf("%s: %w: name the token: token=LABEL, serial=SERIAL or slot-id=N", c.desc, ErrURI)
	}
	if u.Get("object") == "" && len(u.GetEncoded("id")) == 0 {
		return nil, fmt.Errorf("%s: %w: name the key: object=LABEL and/or id=HEX", c.desc, ErrURI)
	}
	for _, k := range []string{"slot-id", "max-sessions"} {
		if !u.Has(k) {
			continue
		}
		n, err := strconv.Atoi(u.Get(k))
		if err != nil || n < 0 || k == "max-sessions" && (n < 2 || n > maxSessions) {
			return nil, fmt.Errorf("%s: %w: %s=%q is not a number meshpki takes (max-sessions: 2 to %d)", c.desc, ErrURI, k, u.Get(k), maxSessions)
		}
	}
	if u.Has("pin-source") {
		src := strings.TrimPrefix(u.Get("pin-source"), "file://")
		if src == "" {
			return nil, fmt.Errorf("%s: %w: pin-source names no file", c.desc, ErrPINSource)
		}
		if c.pin, err = readPINFile(src); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", c.desc, ErrPINSource, err)
		}
		c.lib = without(rawURI, "pin-source")
	}
	return c, nil
}

// canCreate checks that Create can make a key at c.
func (c *checked) canCreate() error {
	if c.typ != apiv1.PKCS11 {
		return fmt.Errorf("%s: %w: keys are created in a token (pkcs11:) only; create a cloud KMS key with the service's own tools and use it with --existing-key", c.desc, ErrURI)
	}
	if c.u.Get("object") == "" || len(c.u.GetEncoded("id")) == 0 {
		return fmt.Errorf("%s: %w: a new key needs both id=HEX and object=LABEL, so that it can be found by either", c.desc, ErrURI)
	}
	return nil
}

// maxSessions bounds max-sessions: crypto11 allocates its session pool up front.
const maxSessions = 4096

// without is rawURI without the attributes named keys (decoded names), the
// others as written.
func without(rawURI string, keys ...string) string {
	scheme, opaque, query := attrs(rawURI)
	keep := func(fields []string) []string {
		var out []string
		for _, f := range fields {
			if !slices.Contains(keys, fieldKey(f)) {
				out = append(out, f)
			}
		}
		return out
	}
	out := scheme + ":" + strings.Join(keep(opaque), ";")
	if q := keep(query); len(q) > 0 {
		out += "?" + strings.Join(q, "&")
	}
	return out
}

// maxPINFile is the most a PIN file holds: PINs are short.
const maxPINFile = 1024

// readPINFile reads the PIN from a regular file (a FIFO or a device would block or
// never end) of at most maxPINFile bytes, trailing white space dropped. Its content
// goes into no message.
func readPINFile(name string) (string, error) {
	st, err := os.Stat(name)
	switch {
	case err != nil:
		return "", err
	case !st.Mode().IsRegular():
		return "", fmt.Errorf("%s is not a regular file (%s)", name, st.Mode().Type())
	case st.Size() > maxPINFile:
		return "", fmt.Errorf("%s holds %d bytes, more than a PIN (at most %d)", name, st.Size(), maxPINFile)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	pin := strings.TrimRightFunc(string(b), unicode.IsSpace)
	if strings.TrimSpace(pin) == "" {
		return "", fmt.Errorf("%s is empty", name)
	}
	return pin, nil
}

// PINSource is the file a pkcs11 URI's pin-source names, "" when none (or when
// the URI does not parse): for a caller that warns about its mode.
func PINSource(rawURI string) string {
	u, err := uri.Parse(rawURI)
	if err != nil || apiv1.Type(strings.ToLower(u.Scheme)) != apiv1.PKCS11 {
		return ""
	}
	return strings.TrimPrefix(u.Get("pin-source"), "file://")
}

// Redact describes rawURI for messages and logs: its scheme and attributes,
// decoded, without any that could carry a secret (which Check refuses anyway). A
// URI that does not parse is not quoted at all.
func Redact(rawURI string) string {
	if !IsURI(rawURI) {
		return "(not a key URI)"
	}
	return describe(rawURI)
}

func describe(rawURI string) string {
	scheme, opaque, query := attrs(rawURI)
	var parts []string
	for _, f := range append(append([]string{}, opaque...), query...) {
		k, v, _ := strings.Cut(f, "=")
		dk, err1 := url.QueryUnescape(k)
		dv, err2 := url.QueryUnescape(v)
		switch {
		case err1 != nil || err2 != nil:
			return strings.ToLower(scheme) + ": (a URI that does not parse)"
		case secretAttr(dk):
			parts = append(parts, dk+"=REDACTED")
		case !strings.Contains(f, "="):
			parts = append(parts, dk)
		default:
			parts = append(parts, dk+"="+dv)
		}
	}
	return strings.ToLower(scheme) + ":" + strings.Join(parts, ";")
}

// Open returns the key rawURI names, checked to be one a mesh CA can use (ECDSA
// P-256 or P-384, RSA 2048 to 4096).
func Open(ctx context.Context, rawURI string, o Options) (*Key, error) {
	c, err := check(rawURI)
	if err != nil {
		return nil, err
	}
	km, err := c.manager(ctx, o)
	if err != nil {
		return nil, err
	}
	s, err := km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: c.lib})
	if err != nil {
		km.Close()
		return nil, c.classify(err, o)
	}
	if _, err := ca.KeyTypeOf(s.Public()); err != nil {
		km.Close()
		return nil, fmt.Errorf("%s: %w: %w", c.desc, ErrKeyType, err)
	}
	return &Key{Signer: s, uri: rawURI, km: km}, nil
}

// Create makes a new key of type kt at rawURI, inside the token: for PKCS#11 the
// private key is sensitive and never extractable (CKA_SENSITIVE true,
// CKA_EXTRACTABLE false), and both id and object must be given. No key may have
// that id or that label already (ErrExists): a key is never replaced, and a URI
// that names a key by either finds one key. Cloud services make their own key
// names: create the key there and Open it.
func Create(ctx context.Context, rawURI string, kt ca.KeyType, o Options) (*Key, error) {
	c, err := check(rawURI)
	if err != nil {
		return nil, err
	}
	if err := c.canCreate(); err != nil {
		return nil, err
	}
	req := &apiv1.CreateKeyRequest{Name: c.lib}
	switch kt {
	case ca.ECDSAP256, "":
		req.SignatureAlgorithm = apiv1.ECDSAWithSHA256
	case ca.ECDSAP384:
		req.SignatureAlgorithm = apiv1.ECDSAWithSHA384
	case ca.RSA2048, ca.RSA3072, ca.RSA4096:
		req.SignatureAlgorithm = apiv1.SHA256WithRSA
		fmt.Sscanf(string(kt), "rsa-%d", &req.Bits)
	default:
		return nil, fmt.Errorf("%s: %w: %s", c.desc, ErrKeyType, kt)
	}
	// One key made at a time by this user on this machine: a token's objects made
	// by another process may stay unseen by a session opened before (SoftHSM2
	// loads them when the module starts), so no lookup inside a run can stand in
	// for the lock. Taken before the module starts, released once the key exists.
	unlock, err := lockCreate(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	km, err := c.manager(ctx, o)
	if err != nil {
		return nil, err
	}
	byID, byLabel := without(c.lib, "object"), without(c.lib, "id")
	for _, by := range []struct{ what, uri string }{{"id", byID}, {"label (object)", byLabel}} {
		found, err := km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: by.uri})
		switch {
		case err == nil && found != nil:
			km.Close()
			return nil, fmt.Errorf("%s: %w: a key with that %s is in the token already (meshpki never replaces a key, and gives no two keys one id or label; choose another)", c.desc, ErrExists, by.what)
		case err != nil && !errors.Is(c.classify(err, o), ErrNotFound):
			km.Close()
			return nil, c.classify(err, o)
		}
	}
	made, err := km.CreateKey(req)
	if err != nil {
		km.Close()
		return nil, c.classify(err, o)
	}
	// Another run may have made a key with the same id or label meanwhile (PKCS#11
	// allows it): each of the three lookups must find this key, or it is dropped.
	var mine crypto.Signer
	same := true
	for _, u := range []string{c.lib, byID, byLabel} {
		s, err := km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: u})
		switch {
		case err != nil:
			same = false
		case ca.KeyMatchesPublic(s.Public(), made.PublicKey):
			mine = s
		default:
			same = false
		}
	}
	if !same {
		k := &Key{Signer: mine, uri: rawURI, km: km}
		cleanup := "the key made was deleted again"
		if mine == nil {
			k.Close()
			cleanup = "the key made could not be told apart: delete the extra one with the token's tools"
		} else if err := k.Destroy(); err != nil {
			cleanup = "the key made could not be deleted: delete the extra one with the token's tools"
		}
		return nil, fmt.Errorf("%s: %w: another key with this id or label appeared while this one was made (another run at the same time?); %s", c.desc, ErrExists, cleanup)
	}
	return &Key{Signer: mine, uri: rawURI, km: km}, nil
}

// lockCreate takes the lock key creation holds: the folder meshpki-kms-UID in the
// temporary folder, which must be this user's own folder (not a link another user
// planted).
func lockCreate(ctx context.Context) (func(), error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("meshpki-kms-%d", os.Getuid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("key creation lock: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("key creation lock: %w", err)
	}
	if !st.IsDir() || !ownedByMe(st) {
		return nil, fmt.Errorf("key creation lock: %s is not a folder of this user's", dir)
	}
	l, err := atomicfs.LockDir(ctx, dir, nil)
	if err != nil {
		return nil, fmt.Errorf("key creation lock: %w", err)
	}
	return l.Unlock, nil
}

// manager connects to the token or service c names.
func (c *checked) manager(ctx context.Context, o Options) (apiv1.KeyManager, error) {
	newKM, ok := apiv1.LoadKeyManagerNewFunc(c.typ)
	if !ok {
		return nil, fmt.Errorf("%s: %w (%s)", c.desc, ErrNotCompiled, notCompiledHint(c.typ))
	}
	pin := o.PIN
	if c.pin != "" {
		pin = c.pin
	}
	km, err := newKM(ctx, apiv1.Options{Type: c.typ, URI: c.lib, Pin: pin})
	if err != nil {
		return nil, c.classify(err, o)
	}
	return km, nil
}

// classify wraps err, from the library, with the error of this package it means.
// crypto11 and the PKCS#11 module say it only in words (crypto11's token error is
// unexported; miekg/pkcs11's return codes need cgo to name), so the words decide.
// The library's words may quote c.lib, which holds no secret (check).
func (c *checked) classify(err error, o Options) error {
	msg := err.Error()
	var nf apiv1.NotFoundError
	var ae apiv1.AlreadyExistsError
	noPIN := c.typ == apiv1.PKCS11 && c.pin == "" && o.PIN == ""
	var why error
	switch {
	case strings.Contains(msg, "compiled without cgo or PKCS#11 support"):
		why = fmt.Errorf("%w: PKCS#11 needs the cgo build (meshpki-hsm, see docs/hsm.md)", ErrNotCompiled)
	case strings.Contains(msg, "failed to open module"), strings.Contains(msg, "failed to initialize module"), strings.Contains(msg, "failed to create module context"):
		module := moduleOf(c.u)
		if reason := loadError(module); reason != "" {
			why = fmt.Errorf("%w: %s (module-path %s: the vendor's PKCS#11 library, for this machine's architecture, with the libraries it needs on the loader's path, e.g. LD_LIBRARY_PATH)", ErrModule, reason, module)
		} else {
			why = fmt.Errorf("%w (module-path %s: is it the vendor's PKCS#11 library, and can it find its configuration?)", ErrModule, module)
		}
	case strings.Contains(msg, "could not find PKCS#11 token"):
		why = ErrToken
	case strings.Contains(msg, "CKR_PIN_INCORRECT"), strings.Contains(msg, "CKR_PIN_INVALID"), strings.Contains(msg, "CKR_PIN_LEN_RANGE"):
		why = ErrPIN
	case strings.Contains(msg, "CKR_PIN_LOCKED"):
		why = fmt.Errorf("%w: the PIN is locked after too many wrong tries (the security officer must unlock it)", ErrPIN)
	case strings.Contains(msg, "CKR_USER_NOT_LOGGED_IN") && noPIN:
		why = fmt.Errorf("%w: no PIN was given (set MESHPKI_PKCS11_PIN or pin-source=FILE)", ErrPIN)
	case errors.As(err, &ae), strings.Contains(msg, "already exists"):
		return fmt.Errorf("%s: %w (meshpki never replaces a key; choose another id and object)", c.desc, ErrExists)
	case errors.As(err, &nf), strings.Contains(msg, "not found"):
		why = fmt.Errorf("%w (a private key and its public key object, both with this id or label)", ErrNotFound)
		if noPIN {
			why = fmt.Errorf("%w (no PIN was given, and a token shows its private keys only after login: set MESHPKI_PKCS11_PIN or pin-source=FILE)", ErrNotFound)
		}
	case strings.Contains(msg, "unsupported key type"), strings.Contains(msg, "unsupported elliptic curve"), strings.Contains(msg, "unsupported curve"):
		why = ErrKeyType
	default:
		return fmt.Errorf("%s: %w", c.desc, err)
	}
	return fmt.Errorf("%s: %w: %w", c.desc, why, err)
}

// BadInput reports whether err, from Open or Create, is the caller's to fix (a
// URI, a PIN, a module, a key that is not there or not usable) rather than a
// failure of the token or service (unreachable, refusing).
func BadInput(err error) bool {
	for _, e := range []error{ErrScheme, ErrURI, ErrPINInURI, ErrPINSource, ErrModule, ErrToken, ErrPIN, ErrNotFound, ErrExists, ErrKeyType, ErrNotCompiled} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// moduleOf is the module-path of a PKCS#11 URI, or what the library loads when
// none is given (p11-kit's proxy).
func moduleOf(u *uri.URI) string {
	if m := u.Get("module-path"); m != "" {
		return m
	}
	return "p11-kit-proxy.so"
}

var _ io.Closer = (*Key)(nil)
