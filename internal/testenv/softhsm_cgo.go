//go:build cgo

package testenv

import (
	"fmt"

	"github.com/ThalesGroup/crypto11"
)

const cgoEnabled = true

// KeyAttributes are the PKCS#11 attributes that say whether a private key can leave
// its token.
type KeyAttributes struct {
	Sensitive, Extractable, AlwaysSensitive, NeverExtractable bool
}

// PrivateKeyAttributes reads from the token (C_GetAttributeValue, through
// crypto11, not through meshpki's kms package) the attributes of the one private
// key labelled object in h; more than one key with that label is an error. It goes
// through crypto11's context, which counts the module's users in the process, so
// that it never initialises or finalises the module under another test's feet.
func (h *SoftHSM) PrivateKeyAttributes(object string) (KeyAttributes, error) {
	var a KeyAttributes
	ctx, err := crypto11.Configure(&crypto11.Config{Path: h.Module, TokenLabel: h.Token, Pin: h.PIN})
	if err != nil {
		return a, fmt.Errorf("token %s: %w", h.Token, err)
	}
	defer ctx.Close()
	keys, err := ctx.FindKeyPairs(nil, []byte(object))
	if err != nil {
		return a, err
	}
	if len(keys) != 1 {
		return a, fmt.Errorf("token %s holds %d private keys labelled %s, want 1", h.Token, len(keys), object)
	}
	set, err := ctx.GetAttributes(keys[0], []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable, crypto11.CkaAlwaysSensitive, crypto11.CkaNeverExtractable})
	if err != nil {
		return a, err
	}
	b := func(t crypto11.AttributeType) bool {
		v := set[t]
		return v != nil && len(v.Value) == 1 && v.Value[0] == 1
	}
	return KeyAttributes{Sensitive: b(crypto11.CkaSensitive), Extractable: b(crypto11.CkaExtractable),
		AlwaysSensitive: b(crypto11.CkaAlwaysSensitive), NeverExtractable: b(crypto11.CkaNeverExtractable)}, nil
}
