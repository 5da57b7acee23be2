package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"

	cflog "github.com/cloudflare/cfssl/log"
	"github.com/urfave/cli/v2"
)

// env is what every command gets: its output streams and logger.
type env struct {
	stdout io.Writer
	// stderr takes the logger's lines, rotate's per-cluster lines and the progress
	// line, from many goroutines: run makes it a lockedWriter so that they never
	// interleave (nor race on a buffer that stands for it in tests).
	stderr io.Writer
	// stderrTTY says stderr is a terminal (progress redraws one line there).
	stderrTTY bool
	log       *slog.Logger
	// started, when set, is called as a command's action starts (see cliSetup).
	started func()
	// unknownCommand is set when the command line names no command of meshpki.
	unknownCommand bool
	// closers end what a run opened for its whole length (an HSM session).
	closers []io.Closer
}

// closeAtEnd has c closed when the run ends.
func (e *env) closeAtEnd(c io.Closer) { e.closers = append(e.closers, c) }

// closeAll closes what closeAtEnd was given, last first, and logs what fails.
func (e *env) closeAll() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		if err := e.closers[i].Close(); err != nil {
			e.log.Warn("closing at the end of the run", "err", err)
		}
	}
	e.closers = nil
}

func newApp(e *env) *cli.App {
	app := &cli.App{
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
			crlCommand(e),
			revokeCommand(e),
			versionCommand(e),
		},
		Writer:         e.stdout,
		ErrWriter:      e.stderr,
		ExitErrHandler: func(*cli.Context, error) {}, // run maps errors to exit codes
	}
	app.OnUsageError = func(_ *cli.Context, err error, _ bool) error {
		return inputError(fmt.Errorf("%w (see 'meshpki --help')", err))
	}
	app.CommandNotFound = func(c *cli.Context, name string) {
		// urfave/cli would print "No help topic for ..." and exit 0.
		help := strings.TrimSpace("meshpki " + commandPath(c))
		fmt.Fprintf(e.stderr, "meshpki: unknown command %q (see '%s --help' for the commands)\n", name, help)
		e.unknownCommand = true
	}
	usageErrors(app.Commands)
	return app
}

// setupLibraries quiets cfssl, which logs every signature at INFO through its own
// global logger, so that stdout and stderr carry only meshpki's output. It writes
// that global: call it once, before any run (main, and the tests' TestMain), never
// from run, which tests call concurrently.
func setupLibraries() { cflog.Level = cflog.LevelFatal }

// cliSetup is held by a run from its start until its command's action starts (or
// the run ends, for help and usage errors): urfave/cli's setup of an App writes
// package-level variables of that library (the --help flag every command
// registers, cli.HelpFlag, and its help command), so in-process runs at once, as
// the tests make them, would race there. Actions run concurrently.
var cliSetup sync.Mutex

// newEnv is a run's env: stderr behind one lock for the logger and every other
// writer of it, which write from many goroutines.
func newEnv(stdout, stderr io.Writer) *env {
	errw := &lockedWriter{w: stderr}
	return &env{stdout: stdout, stderr: errw, stderrTTY: isTerminal(stderr), log: slog.New(slog.NewTextHandler(errw, nil))}
}

// run is main without os.Exit, for tests (after setupLibraries).
func run(args []string, stdout, stderr io.Writer) int {
	var release sync.Once
	cliSetup.Lock()
	e := newEnv(stdout, stderr)
	e.started = func() { release.Do(cliSetup.Unlock) }
	errw := e.stderr
	defer e.started()
	ctx, stop := interruptible(errw)
	defer stop()
	err := newApp(e).RunContext(ctx, args)
	e.closeAll()
	if err == nil && e.unknownCommand {
		return exitUsage
	}
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee != silentFailure {
			fmt.Fprintln(errw, "meshpki:", err)
		}
		return ee.code
	}
	// Errors that did not come from an action are the CLI library's: flags, usage.
	fmt.Fprintln(errw, "meshpki:", err)
	return exitUsage
}

// interruptible returns a context that SIGINT or SIGTERM cancels, with the signal
// as its cause: commands stop starting work and report what they did. The first
// signal also restores the default handling, so a second one ends the process at
// once. stop releases the signals.
func interruptible(stderr io.Writer) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			signal.Stop(sigs)
			fmt.Fprintf(stderr, "meshpki: %s: stopping (signal again to quit at once)\n", s)
			cancel(fmt.Errorf("interrupted by %s", s))
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel(nil)
	}
}

// options is one command after its flags are bound (as kubectl's commands are):
// Validate checks and converts them, refusing bad usage or input (exit 2) with the
// flag named; Run makes the command's library call and writes its result.
type options interface {
	Validate() error
	Run(ctx context.Context, e *env) error
}

// actionOf is a command's action: bind its flags into options, Validate, Run.
func actionOf[O options](e *env, bind func(c *cli.Context) O) cli.ActionFunc {
	return action(func(c *cli.Context) error {
		if e.started != nil {
			e.started()
		}
		o := bind(c)
		if err := o.Validate(); err != nil {
			return err
		}
		return o.Run(c.Context, e)
	})
}

// action wraps a command's action so that its error carries its exit code
// (exitCode) and the CLI's advice (advise).
func action(fn func(c *cli.Context) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		err := fn(c)
		if err == nil || err == silentFailure {
			return err
		}
		return &exitError{code: exitCode(err), err: advise(err)}
	}
}

// cmdArgs is what every command binds besides its flags: its name as typed, for
// messages, and its positional arguments.
type cmdArgs struct {
	// Path names the command, e.g. "intermediate create".
	Path string
	Args []string
}

func bindArgs(c *cli.Context) cmdArgs {
	return cmdArgs{Path: commandPath(c), Args: c.Args().Slice()}
}

// noArgs refuses positional arguments for commands that take none.
func (a cmdArgs) noArgs() error {
	if len(a.Args) > 0 {
		return inputError(fmt.Errorf("%s takes no arguments, got %q (flags go before arguments)", a.Path, a.Args))
	}
	return nil
}

// flagsFirst refuses an argument that looks like a flag: urfave/cli stops reading
// flags at the first argument, so "verify DIR --strict" would take "--strict" for
// a folder. It names the flag and where it goes instead.
func (a cmdArgs) flagsFirst() error {
	for _, arg := range a.Args {
		if len(arg) > 1 && strings.HasPrefix(arg, "-") {
			return inputError(fmt.Errorf("%s: %q comes after an argument, where it is not read as a flag: flags go before arguments (meshpki %s %s ARG...)", a.Path, arg, a.Path, arg))
		}
	}
	return nil
}

// require refuses a run without flag: a clear one-line error (exit 2) instead of
// the CLI library's full help on stdout.
func (a cmdArgs) require(flag, value string) error {
	if value == "" {
		return inputError(fmt.Errorf("--%s is required (see 'meshpki %s --help')", flag, a.Path))
	}
	return nil
}

// usageErrors makes every command report a flag error as one line on stderr and
// exit 2, instead of printing its whole help to stdout, where a pipeline reading
// --output json would get it.
func usageErrors(cmds []*cli.Command) {
	for _, cmd := range cmds {
		cmd.OnUsageError = func(c *cli.Context, err error, _ bool) error {
			return inputError(fmt.Errorf("%w (see 'meshpki %s --help')", err, commandPath(c)))
		}
		usageErrors(cmd.Subcommands)
	}
}

// commandPath names the running command as typed, e.g. "intermediate create".
func commandPath(c *cli.Context) string {
	var names []string
	for _, ctx := range c.Lineage() {
		if ctx.Command != nil && ctx.Command.Name != "" && ctx.Command.Name != c.App.Name {
			names = append([]string{ctx.Command.Name}, names...)
		}
	}
	return strings.Join(slices.Compact(names), " ")
}
