package kms

import "go.step.sm/crypto/kms/apiv1"

// The cloud key services a build holds are registered by the imports of
// cloud_*.go, each measured for what it adds to the binary (docs/hsm.md,
// "Cloud key services"): AWS KMS and Azure Key Vault are compiled in; Google Cloud
// KMS, whose gRPC client adds the most, only with the build tag cloudkms.

// notCompiledHint says what to do about a scheme this build lacks.
func notCompiledHint(t apiv1.Type) string {
	switch t {
	case apiv1.PKCS11:
		return "PKCS#11 needs the cgo build, meshpki-hsm: see docs/hsm.md"
	case apiv1.CloudKMS:
		return "Google Cloud KMS is compiled in with go build -tags cloudkms: see docs/hsm.md"
	}
	return string(t) + " is not compiled into this build: see docs/hsm.md"
}
