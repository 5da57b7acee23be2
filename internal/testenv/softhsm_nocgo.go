//go:build !cgo

package testenv

import "errors"

const cgoEnabled = false

// KeyAttributes: see softhsm_cgo.go.
type KeyAttributes struct {
	Sensitive, Extractable, AlwaysSensitive, NeverExtractable bool
}

// PrivateKeyAttributes needs cgo.
func (h *SoftHSM) PrivateKeyAttributes(object string) (KeyAttributes, error) {
	return KeyAttributes{}, errors.New("built without cgo")
}
