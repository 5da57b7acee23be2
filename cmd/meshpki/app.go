package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	cflog "github.com/cloudflare/cfssl/log"
	"github.com/urfave/cli/v2"
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

// env is what every command gets: its output streams and logger.
type env struct {
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

func newApp(e *env) *cli.App {
	return &cli.App{
		Name:  "meshpki",
		Usage: "one root of trust for every cluster of an Istio mesh",
		Description: `meshpki mints one intermediate CA per cluster from a shared root CA (files or
HashiCorp Vault), writes Istio's cacerts bundle (ca-cert.pem, ca-key.pem,
cert-chain.pem, root-cert.pem) for each, verifies bundles the way istiod does, and
installs them as the cacerts Secret in every cluster of a kubeconfig.

Examples:
   meshpki root create --out root
   meshpki intermediate create --root-dir root --cluster east --cluster west --out bundles
   meshpki verify --mtls bundles/east bundles/west
   meshpki install --bundles bundles --all-contexts
   meshpki status --all-contexts`,
		EnableBashCompletion: true,
		HideVersion:          true,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log debug diagnostics to stderr"},
		},
		Before: func(c *cli.Context) error {
			level := slog.LevelInfo
			if c.Bool("verbose") {
				level = slog.LevelDebug
			}
			e.log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
			return nil
		},
		Commands: []*cli.Command{
			rootCommand(e),
			intermediateCommand(e),
			verifyCommand(e),
			installCommand(e),
			statusCommand(e),
			bootstrapCommand(e),
			rotateCommand(e),
			versionCommand(e),
		},
		Writer:         e.stdout,
		ErrWriter:      e.stderr,
		ExitErrHandler: func(*cli.Context, error) {}, // run maps errors to exit codes
	}
}

// run is main without os.Exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	// cfssl logs every signature at INFO through its own global logger: quiet it here,
	// at the edge, so stdout and stderr carry only meshpki's output.
	cflog.Level = cflog.LevelFatal
	e := &env{stdout: stdout, stderr: stderr, log: slog.New(slog.NewTextHandler(stderr, nil))}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newApp(e).RunContext(ctx, args)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee != silentFailure {
			fmt.Fprintln(stderr, "meshpki:", err)
		}
		return ee.code
	}
	// Errors that did not come from an action are the CLI library's: flags, usage.
	fmt.Fprintln(stderr, "meshpki:", err)
	return exitUsage
}

// action wraps a command's action so that an unclassified error exits 1.
func action(fn func(c *cli.Context) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		err := fn(c)
		var ee *exitError
		if err != nil && !errors.As(err, &ee) {
			return failed(err)
		}
		return err
	}
}

// noArgs refuses positional arguments for commands that take none.
func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return inputError(fmt.Errorf("%s takes no arguments, got %q (flags go before arguments)", c.Command.FullName(), c.Args().Slice()))
	}
	return nil
}
