//go:build !cgo || nopkcs11

package kms

// loadError needs cgo; a build without it cannot load modules at all.
func loadError(string) string { return "" }
