//go:build cloudkms

package kms

// Google Cloud KMS (cloudkms:), only with -tags cloudkms: its gRPC client adds the
// most to the binary (docs/hsm.md).
import _ "go.step.sm/crypto/kms/cloudkms"
