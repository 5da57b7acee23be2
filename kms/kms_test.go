//go:build unix

package kms_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/pkcs11"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/kms"
)

// TestCreateKeepsKeyInToken: a key Create makes in a real PKCS#11 token (SoftHSM2)
// is sensitive and never extractable, as PKCS#11 itself reports it, signs through
// crypto.Signer, and is found again by its object label alone.
func TestCreateKeepsKeyInToken(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	ctx := context.Background()
	for i, kt := range []ca.KeyType{ca.ECDSAP256, ca.RSA3072} {
		object := "root-" + string(kt)
		uri := h.URI("0"+string(rune('1'+i)), object)
		k, err := kms.Create(ctx, uri, kt, kms.Options{})
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		if got, _ := ca.KeyTypeOf(k.Public()); got != kt {
			t.Errorf("created %s, want %s", got, kt)
		}
		a, err := h.PrivateKeyAttributes(object)
		if err != nil {
			t.Fatal(err)
		}
		if !a.Sensitive || a.Extractable || !a.AlwaysSensitive || !a.NeverExtractable {
			t.Errorf("%s: the private key can leave the token: %+v", kt, a)
		}
		digest := sha256.Sum256([]byte("meshpki"))
		sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		switch pub := k.Public().(type) {
		case *ecdsa.PublicKey:
			if !ecdsa.VerifyASN1(pub, digest[:], sig) {
				t.Error("ECDSA signature from the token does not verify")
			}
		case *rsa.PublicKey:
			if rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) != nil {
				t.Error("RSA signature from the token does not verify")
			}
		}
		if err := k.Close(); err != nil {
			t.Fatal(err)
		}
		byLabel := strings.Replace(uri, "id=0"+string(rune('1'+i))+";", "", 1)
		again, err := kms.Open(ctx, byLabel, kms.Options{})
		if err != nil {
			t.Fatalf("open %s by label: %v", kt, err)
		}
		if !ca.KeyMatches(again, k.Public()) {
			t.Error("the key opened again is another key")
		}
		again.Close()
		if _, err := kms.Create(ctx, uri, kt, kms.Options{}); !errors.Is(err, kms.ErrExists) {
			t.Errorf("creating over an existing key: %v, want ErrExists", err)
		}
	}
}

// TestOpenRefuses: each bad input gives its own error, naming the URI, never the PIN.
func TestOpenRefuses(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	ctx := context.Background()
	k, err := kms.Create(ctx, h.URI("0a", "good"), ca.ECDSAP256, kms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	// A P-521 key, which no mesh CA may use, made in the token by the library itself.
	p11, err := pkcs11.New(ctx, apiv1.Options{URI: h.URI("0b", "p521")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p11.CreateKey(&apiv1.CreateKeyRequest{Name: h.URI("0b", "p521"), SignatureAlgorithm: apiv1.ECDSAWithSHA512}); err != nil {
		t.Fatal(err)
	}
	p11.Close()

	dir := t.TempDir()
	wrong, empty := filepath.Join(dir, "wrong"), filepath.Join(dir, "empty")
	os.WriteFile(wrong, []byte("000000\n"), 0o600)
	os.WriteFile(empty, []byte("\n"), 0o600)
	fifo, big := filepath.Join(dir, "fifo"), filepath.Join(dir, "big")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(big, bytes.Repeat([]byte("1"), 1<<20), 0o600)
	swap := func(from, to string) string { return strings.Replace(h.URI("0a", "good"), from, to, 1) }
	for _, tc := range []struct {
		name, uri string
		opts      kms.Options
		want      error
	}{
		{"wrong PIN", swap(h.PINFile, wrong), kms.Options{}, kms.ErrPIN},
		{"wrong PIN from the caller", h.URIWithoutPIN("0a", "good"), kms.Options{PIN: "000000"}, kms.ErrPIN},
		{"missing token", swap("token="+h.Token, "token=nosuchtoken"), kms.Options{}, kms.ErrToken},
		{"missing key", swap("object=good", "object=nosuchkey"), kms.Options{}, kms.ErrNotFound},
		{"no PIN at all", h.URIWithoutPIN("0a", "good"), kms.Options{}, kms.ErrNotFound},
		{"key of the wrong type", h.URI("0b", "p521"), kms.Options{}, kms.ErrKeyType},
		{"module that does not load", swap(h.Module, "/nonexistent/libvendor.so"), kms.Options{}, kms.ErrModule},
		{"module that is not a PKCS#11 library", swap(h.Module, wrong), kms.Options{}, kms.ErrModule},
		{"PIN in the URI", h.URIWithoutPIN("0a", "good") + "?pin-value=" + h.PIN, kms.Options{}, kms.ErrPINInURI},
		{"missing PIN file", swap(h.PINFile, filepath.Join(dir, "nope")), kms.Options{}, kms.ErrPINSource},
		{"empty PIN file", swap(h.PINFile, empty), kms.Options{}, kms.ErrPINSource},
		{"a folder for a PIN file", swap(h.PINFile, dir), kms.Options{}, kms.ErrPINSource},
		{"a FIFO for a PIN file (would block)", swap(h.PINFile, fifo), kms.Options{}, kms.ErrPINSource},
		{"a PIN file of 1 MiB", swap(h.PINFile, big), kms.Options{}, kms.ErrPINSource},
		{"a file name", "/etc/meshpki/root-key.pem", kms.Options{}, kms.ErrScheme},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := kms.Open(ctx, tc.uri, tc.opts)
			if !errors.Is(err, tc.want) {
				k.Close()
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), h.PIN) {
				t.Errorf("the error shows the PIN: %v", err)
			}
			if tc.want != kms.ErrScheme && !strings.Contains(err.Error(), "pkcs11:") {
				t.Errorf("the error does not name the URI: %v", err)
			}
		})
	}
	// A PIN file under a folder named secrets (a Kubernetes Secret volume) is
	// taken: attribute names carry secrets, not paths.
	secrets := filepath.Join(t.TempDir(), "run", "secrets", "client-secret")
	os.MkdirAll(secrets, 0o700)
	os.WriteFile(filepath.Join(secrets, "pin"), []byte(h.PIN), 0o600)
	k, err = kms.Open(ctx, swap(h.PINFile, filepath.Join(secrets, "pin")), kms.Options{})
	if err != nil {
		t.Fatalf("a PIN file under .../secrets/client-secret/: %v", err)
	}
	k.Close()
	// The right PIN from the caller opens it.
	k, err = kms.Open(ctx, h.URIWithoutPIN("0a", "good"), kms.Options{PIN: h.PIN})
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
}

// TestDestroy: a key Create made and Destroy deleted is gone from the token.
func TestDestroy(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	ctx := context.Background()
	k, err := kms.Create(ctx, h.URI("0c", "unused"), ca.ECDSAP256, kms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := kms.Open(ctx, h.URI("0c", "unused"), kms.Options{}); !errors.Is(err, kms.ErrNotFound) {
		t.Fatalf("after Destroy: %v, want ErrNotFound", err)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"pkcs11:token=a;object=b?pin-value=1234":           "pkcs11:token=a;object=b;pin-value=REDACTED",
		"pkcs11:token=a;pin%2Dvalue=1234;object=b":         "pkcs11:token=a;pin-value=REDACTED;object=b",
		"pkcs11:token=a;object=b?pin-source=/run/pin":      "pkcs11:token=a;object=b;pin-source=/run/pin",
		"pkcs11:token=a?module-path=/x&PIN-VALUE=1234&x=y": "pkcs11:token=a;module-path=/x;PIN-VALUE=REDACTED;x=y",
		"pkcs11:token=a;pin-value=1234%":                   "pkcs11: (a URI that does not parse)",
		"azurekms:vault=v;name=k;client-secret=s3":         "azurekms:vault=v;name=k;client-secret=REDACTED",
		"/etc/key.pem":                "(not a key URI)",
		"pkcs11:token=a;object=b%23c": "pkcs11:token=a;object=b#c",
	} {
		if got := kms.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSecretsInURIs: a URI holding a secret, however spelled, is refused before
// anything is reached, and the error does not show it.
func TestSecretsInURIs(t *testing.T) {
	const secret = "S3CR3T99"
	base := "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=t;object=root"
	for _, u := range []string{
		base + "?pin-value=" + secret,
		base + ";pin-value=" + secret,
		base + ";pin%2Dvalue=" + secret,
		base + "&pin-value=" + secret,
		base + ";PIN-VALUE=" + secret,
		base + ";pin-value=" + secret + ";x=%zz",
		base + ";pin-value=" + secret + "%",
		base + "?pin-source=/p;pin-value=" + secret,
		base + "#pin-value=" + secret,
		base + ";x=%zz" + secret,
		"azurekms:vault=v;name=k;client-id=a;client-secret=" + secret + ";tenant-id=t",
	} {
		_, err := kms.Open(context.Background(), u, kms.Options{})
		if err == nil {
			t.Errorf("%s: opened", u)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows the secret: %v", err)
		}
		if !kms.BadInput(err) {
			t.Errorf("%s: %v is not bad input", u, err)
		}
	}
}

// TestCreateRefusesSharedIDOrLabel: a new key may share neither its id nor its label
// with a key in the token, so that a URI naming a key by either finds that one.
func TestCreateRefusesSharedIDOrLabel(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	ctx := context.Background()
	k, err := kms.Create(ctx, h.URI("0d", "mesh-root"), ca.ECDSAP256, kms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	for _, u := range []string{h.URI("0e", "mesh-root"), h.URI("0d", "other")} {
		if _, err := kms.Create(ctx, u, ca.ECDSAP256, kms.Options{}); !errors.Is(err, kms.ErrExists) {
			t.Errorf("%s: %v, want ErrExists", u, err)
		}
	}
	if _, err := h.PrivateKeyAttributes("other"); err == nil {
		t.Error("a refused Create left a key")
	}
}
