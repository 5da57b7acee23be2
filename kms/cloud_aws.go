package kms

// AWS KMS (awskms:): credentials come from the AWS SDK's default chain.
import _ "go.step.sm/crypto/kms/awskms"
