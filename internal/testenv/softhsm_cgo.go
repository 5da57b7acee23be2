//go:build cgo

package testenv

import (
	"fmt"

	"github.com/miekg/pkcs11"
)

const cgoEnabled = true

// KeyAttributes are the PKCS#11 attributes that say whether a private key can leave
// its token.
type KeyAttributes struct {
	Sensitive, Extractable, AlwaysSensitive, NeverExtractable bool
}

// PrivateKeyAttributes reads, through the PKCS#11 module itself (not through
// meshpki's library), the attributes of the private key labelled object in h.
func (h *SoftHSM) PrivateKeyAttributes(object string) (KeyAttributes, error) {
	var a KeyAttributes
	p := pkcs11.New(h.Module)
	if p == nil {
		return a, fmt.Errorf("load %s", h.Module)
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil && err != pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		return a, err
	} else if err == nil {
		defer p.Finalize()
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		return a, err
	}
	for _, slot := range slots {
		info, err := p.GetTokenInfo(slot)
		if err != nil || info.Label != h.Token {
			continue
		}
		s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			return a, err
		}
		defer p.CloseSession(s)
		if err := p.Login(s, pkcs11.CKU_USER, h.PIN); err != nil && err != pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
			return a, err
		}
		if err := p.FindObjectsInit(s, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, object),
		}); err != nil {
			return a, err
		}
		objs, _, err := p.FindObjects(s, 2)
		p.FindObjectsFinal(s)
		if err != nil {
			return a, err
		}
		if len(objs) != 1 {
			return a, fmt.Errorf("token %s holds %d private keys labelled %s, want 1", h.Token, len(objs), object)
		}
		attrs, err := p.GetAttributeValue(s, objs[0], []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_NEVER_EXTRACTABLE, nil),
		})
		if err != nil {
			return a, err
		}
		b := func(i int) bool { return len(attrs[i].Value) == 1 && attrs[i].Value[0] == 1 }
		return KeyAttributes{Sensitive: b(0), Extractable: b(1), AlwaysSensitive: b(2), NeverExtractable: b(3)}, nil
	}
	return a, fmt.Errorf("no token labelled %s", h.Token)
}
