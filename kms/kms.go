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
// environment variable itself.
package kms

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/uri"

	// PKCS#11 (cgo; without it a stub that refuses).
	_ "go.step.sm/crypto/kms/pkcs11"

	"github.com/meshpki/meshpki/ca"
)

// Errors a key can fail with; each is wrapped with the URI (and the library's own
// words) so errors.Is finds it.
var (
	// ErrNotCompiled: this build has no backend for the URI's scheme (PKCS#11
	// in a build without cgo, or a cloud KMS left out).
	ErrNotCompiled = errors.New("this meshpki build cannot reach that kind of key")
	// ErrScheme: the text is not a key URI meshpki knows.
	ErrScheme = errors.New("not a key URI (pkcs11:, awskms:, cloudkms: or azurekms:)")
	// ErrPINInURI: the URI carries the PIN itself (pin-value).
	ErrPINInURI = errors.New("the URI holds the PIN (pin-value): PINs must not appear on command lines or in files that name keys; put it in a file named by pin-source=FILE, or in MESHPKI_PKCS11_PIN")
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
// an unknown scheme, a PIN inside the URI, an unreadable pin-source, a PKCS#11
// URI that names no token or no key. It does not read the PIN file's content
// into any message.
func Check(rawURI string) error {
	_, err := parse(rawURI)
	return err
}

// parse checks rawURI and returns it parsed.
func parse(rawURI string) (*uri.URI, error) {
	if !IsURI(rawURI) {
		return nil, fmt.Errorf("%q: %w", Redact(rawURI), ErrScheme)
	}
	u, err := uri.Parse(rawURI)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Redact(rawURI), err)
	}
	if u.Has("pin-value") {
		return nil, fmt.Errorf("%s: %w", Redact(rawURI), ErrPINInURI)
	}
	if src := u.Get("pin-source"); src != "" {
		if err := checkPINFile(src); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", Redact(rawURI), ErrPINSource, err)
		}
	}
	if apiv1.Type(strings.ToLower(u.Scheme)) == apiv1.PKCS11 {
		if u.Get("token") == "" && u.Get("serial") == "" && u.Get("slot-id") == "" {
			return nil, fmt.Errorf("%s: name the token: token=LABEL, serial=SERIAL or slot-id=N", Redact(rawURI))
		}
		if u.Get("object") == "" && len(u.GetEncoded("id")) == 0 {
			return nil, fmt.Errorf("%s: name the key: object=LABEL and/or id=HEX", Redact(rawURI))
		}
	}
	return u, nil
}

// maxPINFile is the most a PIN file holds: PINs are short.
const maxPINFile = 1024

// checkPINFile checks that the file pin-source names is a regular file (a FIFO or
// a device would block or never end) holding up to maxPINFile bytes, not all
// white space. Its content goes into no message.
func checkPINFile(name string) error {
	st, err := os.Stat(name)
	switch {
	case err != nil:
		return err
	case !st.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file (%s)", name, st.Mode().Type())
	case st.Size() > maxPINFile:
		return fmt.Errorf("%s holds %d bytes, more than a PIN (at most %d)", name, st.Size(), maxPINFile)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return fmt.Errorf("%s is empty", name)
	}
	return nil
}

// Redact is rawURI for messages: any pin-value replaced. (Open refuses such URIs;
// Redact keeps the PIN out of the message that says so.)
func Redact(rawURI string) string {
	before, query, ok := strings.Cut(rawURI, "?")
	if !ok && !strings.Contains(rawURI, "pin-value") {
		return rawURI
	}
	redact := func(part string, sep string) string {
		fields := strings.Split(part, sep)
		for i, f := range fields {
			if k, _, ok := strings.Cut(f, "="); ok && strings.EqualFold(k, "pin-value") {
				fields[i] = k + "=REDACTED"
			}
		}
		return strings.Join(fields, sep)
	}
	out := redact(before, ";")
	if ok {
		out += "?" + redact(query, "&")
	}
	return out
}

// Open returns the key rawURI names, checked to be one a mesh CA can use (ECDSA
// P-256 or P-384, RSA 2048 to 4096).
func Open(ctx context.Context, rawURI string, o Options) (*Key, error) {
	km, err := manager(ctx, rawURI, o)
	if err != nil {
		return nil, err
	}
	s, err := km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: rawURI})
	if err != nil {
		km.Close()
		return nil, classify(rawURI, err, o)
	}
	if _, err := ca.KeyTypeOf(s.Public()); err != nil {
		km.Close()
		return nil, fmt.Errorf("%s: %w: %w", Redact(rawURI), ErrKeyType, err)
	}
	return &Key{Signer: s, uri: rawURI, km: km}, nil
}

// Create makes a new key of type kt at rawURI, inside the token: for PKCS#11 the
// private key is sensitive and never extractable (CKA_SENSITIVE true,
// CKA_EXTRACTABLE false), and both id and object must be given. A key already at
// the URI is never replaced (ErrExists). Cloud services make their own key names:
// create the key there and Open it.
func Create(ctx context.Context, rawURI string, kt ca.KeyType, o Options) (*Key, error) {
	u, err := parse(rawURI)
	if err != nil {
		return nil, err
	}
	if apiv1.Type(strings.ToLower(u.Scheme)) != apiv1.PKCS11 {
		return nil, fmt.Errorf("%s: keys are created in a token (pkcs11:) only; create a cloud KMS key with the service's own tools and use it as it is", Redact(rawURI))
	}
	if u.Get("object") == "" || len(u.GetEncoded("id")) == 0 {
		return nil, fmt.Errorf("%s: a new key needs both id=HEX and object=LABEL, so that it can be found by either", Redact(rawURI))
	}
	req := &apiv1.CreateKeyRequest{Name: rawURI}
	switch kt {
	case ca.ECDSAP256, "":
		req.SignatureAlgorithm = apiv1.ECDSAWithSHA256
	case ca.ECDSAP384:
		req.SignatureAlgorithm = apiv1.ECDSAWithSHA384
	case ca.RSA2048, ca.RSA3072, ca.RSA4096:
		req.SignatureAlgorithm = apiv1.SHA256WithRSA
		fmt.Sscanf(string(kt), "rsa-%d", &req.Bits)
	default:
		return nil, fmt.Errorf("%s: %w: %s", Redact(rawURI), ErrKeyType, kt)
	}
	km, err := manager(ctx, rawURI, o)
	if err != nil {
		return nil, err
	}
	made, err := km.CreateKey(req)
	if err != nil {
		km.Close()
		return nil, classify(rawURI, err, o)
	}
	s, err := km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: rawURI})
	if err != nil {
		km.Close()
		return nil, classify(rawURI, err, o)
	}
	if !ca.KeyMatchesPublic(s.Public(), made.PublicKey) {
		// The library looks for the key it made by id and label, and found another:
		// a second run made one at the same URI at the same time (PKCS#11 allows
		// two objects with one label). Neither may be taken for the other.
		km.Close()
		return nil, fmt.Errorf("%s: %w: two keys now have this id and label (another run created one at the same time); delete the extra one with the token's tools", Redact(rawURI), ErrExists)
	}
	return &Key{Signer: s, uri: rawURI, km: km}, nil
}

// manager connects to the token or service rawURI names.
func manager(ctx context.Context, rawURI string, o Options) (apiv1.KeyManager, error) {
	u, err := parse(rawURI)
	if err != nil {
		return nil, err
	}
	typ := apiv1.Type(strings.ToLower(u.Scheme))
	newKM, ok := apiv1.LoadKeyManagerNewFunc(typ)
	if !ok {
		return nil, fmt.Errorf("%s: %w (%s)", Redact(rawURI), ErrNotCompiled, notCompiledHint(typ))
	}
	km, err := newKM(ctx, apiv1.Options{Type: typ, URI: rawURI, Pin: o.PIN})
	if err != nil {
		return nil, classify(rawURI, err, o)
	}
	return km, nil
}

// classify wraps err, from the library, with the error of this package it means.
// crypto11 and the PKCS#11 module say it only in words (crypto11's token error is
// unexported; miekg/pkcs11's return codes need cgo to name), so the words decide.
func classify(rawURI string, err error, o Options) error {
	msg := err.Error()
	var nf apiv1.NotFoundError
	var ae apiv1.AlreadyExistsError
	var why error
	switch {
	case strings.Contains(msg, "compiled without cgo or PKCS#11 support"):
		why = fmt.Errorf("%w: PKCS#11 needs the cgo build (meshpki-hsm, see docs/hsm.md)", ErrNotCompiled)
	case strings.Contains(msg, "failed to open module"), strings.Contains(msg, "failed to initialize module"), strings.Contains(msg, "failed to create module context"):
		module := moduleOf(rawURI)
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
	case errors.As(err, &ae), strings.Contains(msg, "already exists"):
		return fmt.Errorf("%s: %w (meshpki never replaces a key; choose another id and object)", Redact(rawURI), ErrExists)
	case errors.As(err, &nf), strings.Contains(msg, "not found"):
		why = ErrNotFound
		if o.PIN == "" && !strings.Contains(rawURI, "pin-source") && strings.HasPrefix(strings.ToLower(rawURI), "pkcs11:") {
			why = fmt.Errorf("%w (no PIN was given, and a token shows its private keys only after login: set MESHPKI_PKCS11_PIN or pin-source=FILE)", ErrNotFound)
		}
	default:
		return fmt.Errorf("%s: %w", Redact(rawURI), err)
	}
	return fmt.Errorf("%s: %w: %w", Redact(rawURI), why, err)
}

// moduleOf is the module-path of a PKCS#11 URI, or what the library loads when
// none is given (p11-kit's proxy).
func moduleOf(rawURI string) string {
	u, err := uri.Parse(rawURI)
	if err != nil || u.Get("module-path") == "" {
		return "p11-kit-proxy.so"
	}
	return u.Get("module-path")
}

var _ io.Closer = (*Key)(nil)
