package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// KeyType names a private key algorithm and size.
type KeyType string

// The key types meshpki generates.
const (
	ECDSAP256 KeyType = "ecdsa-p256"
	ECDSAP384 KeyType = "ecdsa-p384"
	RSA2048   KeyType = "rsa-2048"
	RSA3072   KeyType = "rsa-3072"
	RSA4096   KeyType = "rsa-4096"
)

// KeyTypes lists every supported KeyType, default first (a new slice each call).
func KeyTypes() []KeyType { return []KeyType{ECDSAP256, ECDSAP384, RSA2048, RSA3072, RSA4096} }

// ParseKeyType parses a key type name such as "ecdsa-p256" or "rsa-4096".
func ParseKeyType(s string) (KeyType, error) {
	kts := KeyTypes()
	for _, k := range kts {
		if strings.EqualFold(s, string(k)) {
			return k, nil
		}
	}
	names := make([]string, len(kts))
	for i, k := range kts {
		names[i] = string(k)
	}
	return "", fmt.Errorf("unknown key type %q (want one of %s)", s, strings.Join(names, ", "))
}

// GenerateKey makes a new private key of type kt.
func GenerateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case ECDSAP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case RSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("unknown key type %q", kt)
}

// Errors a key can fail with. Callers wrap them with the file or field name.
var (
	ErrNoPEM        = errors.New("no PEM data found")
	ErrEncryptedKey = errors.New("private key is encrypted (istiod needs an unencrypted key)")
	ErrKeyMismatch  = errors.New("private key does not match the certificate")
	ErrWeakKey      = errors.New("key is too weak")
)

// MarshalPrivateKeyPEM encodes an ECDSA key as SEC 1 ("EC PRIVATE KEY") and an RSA
// key as PKCS #1 ("RSA PRIVATE KEY"): the forms every istiod version reads.
func MarshalPrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
	}
	return nil, fmt.Errorf("unsupported private key type %T", key)
}

// ErrBOM means a PEM file starts with a UTF-8 byte order mark, which istiod's PEM
// reader (Go's encoding/pem) does not skip: the first block would not be found.
var ErrBOM = errors.New("starts with a UTF-8 byte order mark (BOM), which istiod's PEM reader does not skip: save the file without it")

var utf8BOM = []byte("\xef\xbb\xbf")

// ecParameters is the block `openssl ecparam -genkey` writes before the key.
const ecParameters = "EC PARAMETERS"

// ParsePrivateKeyPEM reads one PEM private key: SEC 1, PKCS #1 or PKCS #8, ECDSA or
// RSA, unencrypted. As RFC 7468 allows, text outside the PEM blocks is ignored, and
// so is an EC PARAMETERS block (openssl ecparam -genkey writes one before the key);
// a second key, a truncated block or a leading byte order mark is an error.
// Errors never contain key material.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	if bytes.HasPrefix(data, utf8BOM) {
		return nil, ErrBOM
	}
	var block *pem.Block
	var nkeys, nparams int
	for rest := data; ; {
		i := bytes.Index(rest, pemBegin)
		if i < 0 {
			break
		}
		rest = rest[i:]
		b, r := pem.Decode(rest)
		if b == nil || bytes.Contains(rest[len(pemBegin):len(rest)-len(r)], pemBegin) {
			if block == nil && nparams == 0 {
				return nil, ErrNoPEM
			}
			return nil, errors.New("malformed or truncated PEM block")
		}
		rest = r
		if b.Type == ecParameters {
			nparams++
			continue
		}
		if nkeys++; block == nil {
			block = b
		} else if !strings.HasSuffix(b.Type, "PRIVATE KEY") || !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			return nil, fmt.Errorf("holds a %q block and a %q block, want one private key", block.Type, b.Type)
		}
	}
	switch {
	case nkeys > 1:
		return nil, fmt.Errorf("holds %d private keys, want 1", nkeys)
	case block == nil && nparams > 0:
		return nil, fmt.Errorf("holds %s but no private key", ecParameters)
	case block == nil && len(bytes.TrimSpace(data)) == 0:
		return nil, errors.New("empty")
	case block == nil:
		return nil, ErrNoPEM
	}
	//lint:ignore SA1019 detecting legacy encryption is what we want
	if block.Type == "ENCRYPTED PRIVATE KEY" || x509.IsEncryptedPEMBlock(block) { //nolint:staticcheck
		return nil, ErrEncryptedKey
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block is %q, want a private key", block.Type)
	}
	if err != nil {
		// The parser's detail is about ASN.1 structure and helps nobody; keep it short.
		return nil, fmt.Errorf("malformed %s: the PEM body is not a valid key of that type", block.Type)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("unsupported private key type %T (want ECDSA or RSA)", key)
}

// checkIstiodKeyPEM refuses what ParsePrivateKeyPEM accepts but istiod does not:
// istiod reads only the first PEM block of ca-key.pem, so that must be the key.
func checkIstiodKeyPEM(data []byte) error {
	if b, _ := pem.Decode(data); b != nil && b.Type == ecParameters {
		return fmt.Errorf("starts with an %s block: istiod reads only the first PEM block of the key file, so it would find no key; remove the block (openssl ec -in KEY -out KEY drops it)", ecParameters)
	}
	return nil
}

// CheckKeyStrength rejects RSA keys under 2048 bits and ECDSA curves under P-256.
func CheckKeyStrength(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("%w: RSA %d bits (minimum 2048)", ErrWeakKey, k.N.BitLen())
		}
		return nil
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < 256 {
			return fmt.Errorf("%w: ECDSA %s (minimum P-256)", ErrWeakKey, k.Curve.Params().Name)
		}
		return nil
	}
	return fmt.Errorf("unsupported public key type %T (want ECDSA or RSA)", pub)
}

// KeyTypeOf names the KeyType of a public key meshpki can make: ECDSA P-256 or
// P-384, RSA 2048, 3072 or 4096.
func KeyTypeOf(pub crypto.PublicKey) (KeyType, error) {
	switch d := DescribeKey(pub); d {
	case "ECDSA P-256":
		return ECDSAP256, nil
	case "ECDSA P-384":
		return ECDSAP384, nil
	case "RSA 2048":
		return RSA2048, nil
	case "RSA 3072":
		return RSA3072, nil
	case "RSA 4096":
		return RSA4096, nil
	default:
		return "", fmt.Errorf("%s: not a key type meshpki makes (ECDSA P-256 or P-384, RSA 2048, 3072 or 4096)", d)
	}
}

// KeyMatches reports whether key is the private half of pub.
func KeyMatches(key crypto.Signer, pub crypto.PublicKey) bool {
	return KeyMatchesPublic(key.Public(), pub)
}

// DescribeKey names a public key, e.g. "ECDSA P-256" or "RSA 4096".
func DescribeKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	}
	return fmt.Sprintf("%T", pub)
}
