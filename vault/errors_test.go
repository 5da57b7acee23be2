package vault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
)

// timeoutError is a net.Error that timed out, as net/http's client reports one.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// TestUnreachableOnlyForConnectionFailures: "cannot reach Vault" is said of real
// failures to talk to the server (dial, refused or reset connections, DNS, timeouts,
// a connection closed without an answer), never of errors made on this side (a bad
// URL scheme, a cancelled context, an EOF that is not the connection's).
func TestUnreachableOnlyForConnectionFailures(t *testing.T) {
	const u = "http://vault.example:8200/v1/sys/health"
	wrap := func(err error) error { return &url.Error{Op: "Get", URL: u, Err: err} }
	dial := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	for _, tc := range []struct {
		name        string
		err         error
		unreachable bool
	}{
		{"connection refused", wrap(dial(syscall.ECONNREFUSED)), true},
		{"host unreachable", wrap(dial(syscall.EHOSTUNREACH)), true},
		{"dns", wrap(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "vault.example", IsNotFound: true}}), true},
		{"connection reset", wrap(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), true},
		{"timeout", wrap(timeoutError{}), true},
		{"deadline while talking", wrap(context.DeadlineExceeded), true},
		{"closed without an answer", wrap(io.EOF), true},
		{"cut short", wrap(io.ErrUnexpectedEOF), true},
		{"bad scheme", wrap(errors.New(`unsupported protocol scheme "vault"`)), false},
		{"no host in URL", wrap(errors.New("http: no Host in request URL")), false},
		{"bad proxy setting", wrap(errors.New(`invalid proxy address "::"`)), false},
		{"cancelled", wrap(context.Canceled), false},
		{"EOF reading a local file", fmt.Errorf("read token file: %w", io.EOF), false},
		{"EOF in a decoded answer", errors.New("error decoding JSON: unexpected EOF"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := describe(tc.err, "read", "sys/health")
			if got := errors.Is(err, ErrUnreachable); got != tc.unreachable {
				t.Fatalf("unreachable=%v, want %v: %v", got, tc.unreachable, err)
			}
			var ue *url.Error
			if request := !tc.unreachable && errors.As(tc.err, &ue) && !errors.Is(tc.err, context.Canceled); errors.Is(err, ErrRequest) != request {
				t.Fatalf("ErrRequest=%v, want %v: %v", errors.Is(err, ErrRequest), request, err)
			}
		})
	}
}
