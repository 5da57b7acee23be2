package ca

// The roots file (root-cert.pem, or ca.crt in the tls layout) as istiod compares it on a
// hot reload. istiod takes a changed roots file only with ISTIO_MULTIROOT_MESH=true and
// only when the old and the new file contain one another
// (istio.io/istio pilot/pkg/bootstrap/istio_ca.go, handleEvent): byte for byte in Istio
// 1.20-1.29 (bytes.Contains either way), as sets of certificates from 1.30
// (pemBundleHasSubsetRelation). Otherwise it logs "Updating new ROOT-CA not supported"
// and keeps its old CA. So meshpki only ever extends or trims the bytes already
// installed: it never reorders or re-encodes them.

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// rootsBlock is one CERTIFICATE block of a roots file and the bytes it owns: the text
// before it (back to the previous block) and the block itself.
type rootsBlock struct {
	cert       *x509.Certificate
	start, end int
}

// splitRootsFile cuts a roots file into its certificate blocks. ok is false when the file
// does not parse as ParseCertificatesPEM reads it.
func splitRootsFile(data []byte) (blocks []rootsBlock, ok bool) {
	if _, err := ParseCertificatesPEM(data); err != nil {
		return nil, false
	}
	off := 0
	rest := data
	for {
		block, r := pem.Decode(rest)
		if block == nil {
			break
		}
		end := len(data) - len(r)
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, false
		}
		blocks = append(blocks, rootsBlock{cert: c, start: off, end: end})
		off, rest = end, r
	}
	return blocks, len(blocks) > 0
}

// KeepRootsFile returns a roots file holding exactly the certificates want (as a set),
// made from current, the roots file installed now, so that istiod takes the change:
//
//   - want equals current's certificates: current, byte for byte;
//   - want adds certificates: current, byte for byte, then the new ones appended as PEM;
//   - want drops certificates: the bytes of the blocks kept, each with the text before
//     it, in current's order (a substring of current when the kept blocks are adjacent,
//     as the last step of a root rotation keeps the root appended by the first).
//
// When current does not parse, or shares no certificate with want, want is encoded
// afresh (that is a root switch, which no istiod takes without a restart).
func KeepRootsFile(current []byte, want []*x509.Certificate) []byte {
	blocks, ok := splitRootsFile(current)
	if !ok || len(want) == 0 {
		return EncodeCertificatesPEM(want...)
	}
	var have []*x509.Certificate
	keptAll, keptAny := true, false
	for _, b := range blocks {
		have = append(have, b.cert)
		if ContainsCert(want, b.cert) {
			keptAny = true
		} else {
			keptAll = false
		}
	}
	if !keptAny {
		return EncodeCertificatesPEM(want...)
	}
	var out []byte
	if keptAll {
		out = bytes.Clone(current)
	} else {
		last := -1
		for i, b := range blocks {
			if ContainsCert(want, b.cert) {
				out = append(out, current[b.start:b.end]...)
				last = i
			}
		}
		if last == len(blocks)-1 {
			out = append(out, current[blocks[last].end:]...) // the text after the last block
		}
	}
	var added []*x509.Certificate
	for _, c := range want {
		if !ContainsCert(have, c) && !ContainsCert(added, c) {
			added = append(added, c)
		}
	}
	if len(added) > 0 {
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		out = append(out, EncodeCertificatesPEM(added...)...)
	}
	return out
}

// IstioRelease is an Istio minor version, e.g. {1, 24}.
type IstioRelease struct{ Major, Minor int }

func (r IstioRelease) String() string { return fmt.Sprintf("%d.%d", r.Major, r.Minor) }

func (r IstioRelease) atLeast(minor int) bool {
	return r.Major > 1 || r.Major == 1 && r.Minor >= minor
}

// RootsChangeVerdict says whether an istiod that has loaded one roots file takes
// another on a hot reload, and why not.
type RootsChangeVerdict struct {
	Accepted bool
	// Reason is empty when Accepted and nothing changed; otherwise a sentence.
	Reason string
}

// IstiodTakesRootsChange tells whether istiod release rel, running with multiRoot
// (ISTIO_MULTIROOT_MESH=true), takes a change of its roots file from loaded to next on
// a hot reload, as pilot/pkg/bootstrap/istio_ca.go decides:
//
//   - an unchanged file (byte for byte) is always taken (only the intermediate changes);
//   - before 1.19 istiod does not reload cacerts at all: it needs a restart;
//   - otherwise a changed file needs multiRoot, and one file containing the other: byte
//     for byte (bytes.Contains) in 1.20-1.29, as sets of certificates from 1.30.
//
// 1.19 (not checked against its code) is treated like 1.20.
func IstiodTakesRootsChange(rel IstioRelease, multiRoot bool, loaded, next []byte) RootsChangeVerdict {
	if !rel.atLeast(19) {
		if bytes.Equal(loaded, next) {
			return RootsChangeVerdict{Accepted: true}
		}
		return RootsChangeVerdict{Reason: fmt.Sprintf("Istio %s does not reload cacerts: istiod must be restarted", rel)}
	}
	if bytes.Equal(loaded, next) {
		return RootsChangeVerdict{Accepted: true}
	}
	if !multiRoot {
		return RootsChangeVerdict{Reason: "the roots changed and ISTIO_MULTIROOT_MESH is off: istiod logs \"Multi root is disabled, updating new ROOT-CA not supported\""}
	}
	if rel.atLeast(30) {
		a, errA := ParseCertificatesPEM(loaded)
		b, errB := ParseCertificatesPEM(next)
		if errA == nil && errB == nil && (SubsetOf(a, b) || SubsetOf(b, a)) {
			return RootsChangeVerdict{Accepted: true, Reason: "roots extended or trimmed"}
		}
		return RootsChangeVerdict{Reason: "neither roots file holds every certificate of the other: istiod logs \"Updating new ROOT-CA not supported\""}
	}
	if bytes.Contains(loaded, next) || bytes.Contains(next, loaded) {
		return RootsChangeVerdict{Accepted: true, Reason: "roots extended or trimmed"}
	}
	return RootsChangeVerdict{Reason: fmt.Sprintf("neither roots file contains the other byte for byte, which Istio %s requires (bytes.Contains): istiod logs \"Updating new ROOT-CA not supported\"", rel)}
}

// SubsetOf reports whether every certificate of a is in b.
func SubsetOf(a, b []*x509.Certificate) bool {
	for _, c := range a {
		if !ContainsCert(b, c) {
			return false
		}
	}
	return true
}

// Overlap reports whether a and b share a certificate.
func Overlap(a, b []*x509.Certificate) bool {
	for _, c := range a {
		if ContainsCert(b, c) {
			return true
		}
	}
	return false
}

// SameCertificates reports whether a and b hold the same certificates, as sets.
func SameCertificates(a, b []*x509.Certificate) bool {
	return SubsetOf(a, b) && SubsetOf(b, a)
}
