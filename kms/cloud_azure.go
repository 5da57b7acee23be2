package kms

// Azure Key Vault (azurekms:): credentials come from the Azure SDK's default chain.
import _ "go.step.sm/crypto/kms/azurekms"
