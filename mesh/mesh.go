// Package mesh runs meshpki's jobs over a whole mesh of Kubernetes clusters, each
// one call that takes the clusters (package k8s) and options, and returns a report
// with its verdict and, for a job that could not do its work, the error that says
// why. Package ca holds the certificate logic; k8s the Kubernetes adapter (one
// cluster's Secret, Lease and istiod); this package the jobs that must see every
// cluster at once:
//
//   - Install: install each cluster's bundle as cacerts, the new CAs' CRLs spread
//     first when the mesh uses CRLs.
//   - Bootstrap: mint one new cluster's intermediate and install it, into a mesh.
//   - Rotate: what the rotation CronJob does: renew each due intermediate, with the
//     mesh's CRLs kept whole before and after.
//   - CRLSync and Revoke: keep one current CRL of every CA of the mesh in every
//     cluster; revoke cluster CAs across the mesh.
//   - RotateRoot and RootRotationStatus: move the mesh one gated step towards a
//     new root, from a shared root or from clusters that run on different roots
//     today (istiod's own self-signed CA, another mesh's root).
//   - Status: every cluster's cacerts and istiod, and the mesh's consistency.
//
// The CA that signs cluster CAs reaches the jobs as a Source: its ca.Issuer and,
// when the mesh uses CRLs, its revocation record (package rootsource opens one
// from files or Vault).
//
// Errors caused by bad input (a root that cannot sign what was asked, a missing
// CRL of a CA above an issuing CA, a revocation already recorded...) match
// ErrInvalid with errors.Is; the CLI exits 2 for them and 1 for the rest. The
// package reads no environment variables, prints nothing, and never returns key
// material in a report or an error.
package mesh

import (
	"errors"

	"github.com/meshpki/meshpki/k8s"
)

// Verdict is what a job's report says of the run as a whole.
type Verdict string

// Verdicts.
const (
	// OK: everything asked for was done (or was already so).
	OK Verdict = "ok"
	// Waiting: nothing was done because the next step is not due yet; a
	// scheduler reruns later (a root rotation's minimum step interval).
	Waiting Verdict = "waiting"
	// Failed: some or all of the work failed; the report says where.
	Failed Verdict = "failed"
)

// ErrInvalid is matched (errors.Is) by errors caused by bad input rather than by a
// failing cluster, Vault or network.
var ErrInvalid = errors.New("invalid input")

// inputError marks an error as bad input: errors.Is(err, ErrInvalid) holds, and
// the error reads and unwraps as the one it wraps.
type inputError struct{ err error }

func (e *inputError) Error() string        { return e.err.Error() }
func (e *inputError) Unwrap() error        { return e.err }
func (e *inputError) Is(target error) bool { return target == ErrInvalid }

// invalid marks err as bad input (nil stays nil).
func invalid(err error) error {
	if err == nil || errors.Is(err, ErrInvalid) {
		return err
	}
	return &inputError{err: err}
}

// namespaceOr is ns, or k8s.DefaultNamespace when empty.
func namespaceOr(ns string) string {
	if ns == "" {
		return k8s.DefaultNamespace
	}
	return ns
}
