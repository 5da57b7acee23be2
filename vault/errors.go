package vault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/hashicorp/vault/api"
)

// Kinds of failure. Every error of this package wraps one of them (through *Error),
// so callers can test with errors.Is.
var (
	// ErrUnreachable: no answer from Vault: the connection could not be made or
	// broke (refused, reset, DNS, network unreachable, timeout, closed without an
	// answer).
	ErrUnreachable = errors.New("vault unreachable")
	// ErrRequest: the request could not be sent for a reason on this side (a bad
	// address or proxy setting, an unsupported scheme); Vault was not asked.
	ErrRequest = errors.New("vault request failed before reaching vault")
	// ErrTLS: the TLS handshake with Vault failed (unknown CA, wrong name, not TLS).
	ErrTLS = errors.New("TLS with vault failed")
	// ErrSealed: Vault is sealed or not initialized.
	ErrSealed = errors.New("vault is sealed")
	// ErrAuth: the login or the token was refused.
	ErrAuth = errors.New("vault login failed")
	// ErrPermissionDenied: the token's policies lack a capability on a path.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrMountNotFound: nothing (or not the expected engine) is mounted at the path.
	ErrMountNotFound = errors.New("vault mount not found")
	// ErrIssuerNotFound: the PKI mount has no such issuer (or no root at all).
	ErrIssuerNotFound = errors.New("vault PKI issuer not found")
	// ErrSecretNotFound: no KV secret at the path.
	ErrSecretNotFound = errors.New("vault secret not found")
	// ErrMalformed: Vault's answer or a stored secret is not what meshpki expects.
	ErrMalformed = errors.New("malformed vault data")
	// ErrExists: the write would replace something meshpki never overwrites.
	ErrExists = errors.New("already exists in vault")
	// ErrServer: Vault answered with an error meshpki has no better name for.
	ErrServer = errors.New("vault error")
)

// Error is a failed Vault operation. Its message names the Vault path and, for
// permission errors, the capability the policy lacks; it never holds secret material.
type Error struct {
	// Kind is one of the Err* sentinels.
	Kind error
	// Path is the Vault path (relative to the namespace), e.g. pki/root/sign-intermediate.
	Path string
	// Capability is the policy capability the operation needs (create, read, update, list).
	Capability string
	// Msg is the full, human-readable message.
	Msg string
	// Err is the underlying error, typically an *api.ResponseError.
	Err error
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the kind and the underlying error.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// describe turns an error from the api package into an *Error for an operation
// needing capability on path.
func describe(err error, capability, path string) error {
	if err == nil {
		return nil
	}
	var ve *Error
	if errors.As(err, &ve) {
		return err
	}
	e := &Error{Path: path, Capability: capability, Err: err}
	var re *api.ResponseError
	switch {
	case errors.As(err, &re):
		msgs := vaultMessages(re)
		switch {
		case re.StatusCode == http.StatusForbidden && hasMessage(re, "invalid token"):
			e.Kind = ErrAuth
			e.Msg = fmt.Sprintf("Vault refused %s on %s: the token is invalid, expired or revoked", capability, path)
		case re.StatusCode == http.StatusForbidden:
			e.Kind = ErrPermissionDenied
			e.Msg = fmt.Sprintf("Vault denied %q on %s (HTTP 403): the token's policies need `path %q { capabilities = [%q] }`",
				capability, path, path, capability)
			if re.NamespacePath != "" {
				e.Msg += " in namespace " + re.NamespacePath
			}
		case re.StatusCode == http.StatusNotFound && hasMessage(re, "no handler for route"):
			e.Kind = ErrMountNotFound
			e.Msg = fmt.Sprintf("nothing is mounted at %s/ in Vault (no handler for %s): check the mount name", firstSegment(path), path)
		case re.StatusCode == http.StatusServiceUnavailable && hasMessage(re, "sealed"):
			e.Kind = ErrSealed
			e.Msg = fmt.Sprintf("Vault is sealed (at %s): unseal it and retry", path)
		case re.StatusCode >= 500:
			e.Kind = ErrServer
			e.Msg = fmt.Sprintf("Vault failed on %s (HTTP %d, after retries): %s", path, re.StatusCode, msgs)
		default:
			e.Kind = ErrServer
			e.Msg = fmt.Sprintf("Vault refused %s on %s (HTTP %d): %s", capability, path, re.StatusCode, msgs)
		}
	case isTLSError(err):
		addr, cause := unwrapURL(err)
		e.Kind = ErrTLS
		e.Msg = fmt.Sprintf("TLS with Vault at %s failed (%s): %v; check the address's scheme and the CA certificate that signed Vault's certificate",
			addr, path, cause)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", path, err)
	case isUnreachable(err):
		addr, cause := unwrapURL(err)
		e.Kind = ErrUnreachable
		e.Msg = fmt.Sprintf("cannot reach Vault at %s (%s): %v", addr, path, cause)
	case isRequestError(err):
		addr, cause := unwrapURL(err)
		e.Kind = ErrRequest
		e.Msg = fmt.Sprintf("could not send %s on %s to Vault at %s: %v; check the address and proxy settings", capability, path, addr, cause)
	default:
		e.Kind = ErrServer
		e.Msg = fmt.Sprintf("Vault %s on %s failed: %v", capability, path, err)
	}
	return e
}

// isUnreachable reports a failure to talk to the server, as the HTTP transport
// reports it (a *url.Error): a dial, read or write error on the connection (refused,
// reset, no route, DNS), a timeout, or a connection closed before a whole answer.
// Errors made on this side (a bad URL or proxy setting, a cancelled context, an
// address that does not parse) and errors that never reached the transport (an EOF
// reading a file or decoding an answer) are not.
func isUnreachable(err error) bool {
	var ue *url.Error
	if !errors.As(err, &ue) || errors.Is(ue.Err, context.Canceled) {
		return false
	}
	cause := ue.Err
	var (
		ae *net.AddrError
		oe *net.OpError
		de *net.DNSError
		ne net.Error
	)
	switch {
	case errors.As(cause, &ae):
		return false // an address that does not parse: this side's
	case errors.As(cause, &de), errors.As(cause, &oe):
		return true
	case errors.Is(cause, syscall.ECONNREFUSED), errors.Is(cause, syscall.ECONNRESET), errors.Is(cause, syscall.ECONNABORTED),
		errors.Is(cause, syscall.EHOSTUNREACH), errors.Is(cause, syscall.ENETUNREACH), errors.Is(cause, syscall.ETIMEDOUT),
		errors.Is(cause, syscall.EPIPE):
		return true
	case errors.Is(cause, context.DeadlineExceeded), errors.As(cause, &ne) && ne.Timeout():
		return true
	case errors.Is(cause, io.EOF), errors.Is(cause, io.ErrUnexpectedEOF):
		return true // the server closed the connection without a (whole) answer
	}
	return false
}

// isRequestError reports a transport error that is not a connection failure: the
// request could not be made on this side.
func isRequestError(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) && !isUnreachable(err)
}

// unwrapURL splits url.Error's "Get \"http://host/v1/path\": cause" into the
// server's address and the cause.
func unwrapURL(err error) (addr string, cause error) {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return "", err
	}
	if u, perr := url.Parse(ue.URL); perr == nil {
		addr = u.Scheme + "://" + u.Host
	}
	return addr, ue.Err
}

// vaultMessages joins Vault's error strings, flattening its "1 error occurred" lists.
func vaultMessages(re *api.ResponseError) string {
	var out []string
	for _, m := range re.Errors {
		for _, line := range strings.Split(m, "\n") {
			line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "* "))
			if line == "" || strings.HasSuffix(line, "error occurred:") || strings.HasSuffix(line, "errors occurred:") {
				continue
			}
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		return http.StatusText(re.StatusCode)
	}
	return strings.Join(out, "; ")
}

func hasMessage(re *api.ResponseError, sub string) bool {
	for _, m := range re.Errors {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}

func firstSegment(path string) string {
	s, _, _ := strings.Cut(strings.Trim(path, "/"), "/")
	return s
}
