package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/rotation"
	"github.com/meshpki/meshpki/k8s"
	"github.com/meshpki/meshpki/mesh"
	"github.com/meshpki/meshpki/vault"
)

// Exit codes, documented in README.md.
const (
	exitOK     = 0
	exitFailed = 1 // the operation failed (a bundle did not verify, a cluster failed)
	exitUsage  = 2 // bad usage or bad input (flags, files, names)
)

// exitError carries an exit code with its error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// inputError marks err as bad usage or input: exit code 2.
func inputError(err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: exitUsage, err: err}
}

// failed marks err as a failed operation: exit code 1.
func failed(err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: exitFailed, err: err}
}

// silentFailure exits 1 without printing: the result already said what failed.
var silentFailure = &exitError{code: exitFailed, err: errors.New("")}

// exitCode is the one mapping from an error to meshpki's exit code: a code the CLI
// gave it (flags, files; exitError), bad input as the libraries mark it
// (mesh.ErrInvalid, and Vault's wrong mount, issuer, path or data) exits 2; an
// interrupted run, and every other failure, exits 1.
func exitCode(err error) int {
	var ee *exitError
	var ve *vault.Error
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, context.Canceled):
		return exitFailed
	case errors.Is(err, mesh.ErrInvalid):
		return exitUsage
	case errors.As(err, &ve) && vaultInput(err):
		return exitUsage
	}
	return exitFailed
}

// vaultInput tells the Vault errors that come from what the user named: a mount,
// issuer or secret that is not there, or data that is not what meshpki stores.
func vaultInput(err error) bool {
	for _, e := range []error{vault.ErrMountNotFound, vault.ErrIssuerNotFound, vault.ErrSecretNotFound, vault.ErrMalformed, vault.ErrExists} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// vaultError classifies an error of the Vault path of a root source at the edge
// where it was opened: an error that is not Vault's own (an address, a file, a
// name) is a setting, bad input (2); Vault's own go through exitCode.
func vaultError(err error) error {
	var ve *vault.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return failed(err)
	case !errors.As(err, &ve):
		return inputError(err)
	}
	return &exitError{code: exitCode(err), err: err}
}

// advice is what the CLI adds to a library error: the flag or command that helps.
// The libraries describe what is wrong; they name no flag or command.
type advice struct {
	is   error
	tell func(err error) string
}

var advices = []advice{
	{k8s.ErrRootChanged, func(error) string { return " (--allow-new-root replaces them anyway)" }},
	{k8s.ErrOtherRoot, func(error) string { return " (--allow-new-root rotates it anyway)" }},
	{k8s.ErrSecretExists, func(error) string {
		return ": bootstrap is for new clusters; use meshpki install, or pass --force to replace it (a backup is kept)"
	}},
	{ca.ErrNotWaiting, func(error) string { return " (make one with meshpki intermediate csr)" }},
	{ca.ErrImported, func(error) string { return " (pass --force to replace it)" }},
	{mesh.ErrRevokedCA, func(error) string { return " (pass --readmit CLUSTER to give it a new one)" }},
	{rotation.ErrNeedsAdopt, func(error) string { return " (pass --adopt)" }},
	{mesh.ErrNoUpstreamCRL, func(error) string { return "; give them with --upstream-crl FILE" }},
	{mesh.ErrRootCRLNotHeld, func(error) string { return " (run meshpki crl sync with the root source)" }},
	{vault.ErrIssuerNotFound, func(err error) string {
		var ve *vault.Error
		if errors.As(err, &ve) && strings.Contains(ve.Msg, "has no root yet") {
			return fmt.Sprintf(" (meshpki root create --vault-pki %s)", strings.TrimSuffix(ve.Path, "/issuers"))
		}
		return ""
	}},
}

// advise returns err with the CLI's advice added to its message; it still wraps
// err, so exitCode reads it as before.
func advise(err error) error {
	if err == nil {
		return nil
	}
	var mb *mesh.MissingBundleError
	if errors.As(err, &mb) {
		return &advised{err: err, msg: fmt.Sprintf("%s (mint one with your root: meshpki intermediate create --root-dir ROOT --cluster %s --out %s; or leave the cluster out, or bootstrap it: meshpki bootstrap --context CTX --root-dir ROOT)", err, mb.Cluster, filepath.Dir(mb.Dir))}
	}
	for _, a := range advices {
		if errors.Is(err, a.is) {
			return &advised{err: err, msg: err.Error() + a.tell(err)}
		}
	}
	return err
}

// adviseText is advise's message, "" for nil.
func adviseText(err error) string {
	if err == nil {
		return ""
	}
	return advise(err).Error()
}

type advised struct {
	err error
	msg string
}

func (a *advised) Error() string { return a.msg }
func (a *advised) Unwrap() error { return a.err }

// warningText is a library warning with the CLI's advice.
func warningText(w string) string {
	switch {
	case w == k8s.WarningIstiodSelfSigned:
		return w + "; or pass --restart-istiod"
	case strings.Contains(w, "the mesh CRL set is spread again"), strings.Contains(w, "the mesh CRL set must be spread again"):
		return w + ": run meshpki crl sync"
	}
	return w
}

// problemText is a mesh problem's message with the CLI's advice.
func problemText(p ca.Problem) string {
	switch p.Check {
	case "mesh-crl-missing", "mesh-crl-stale":
		return p.Message + "; run meshpki crl sync"
	case "mesh-crl-off":
		return p.Message + "; run meshpki crl sync"
	case "mesh-crl-behind":
		return p.Message + "; run meshpki crl sync (or the revoke again)"
	}
	return p.Message
}
