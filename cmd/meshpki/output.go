package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"golang.org/x/term"
)

func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "result format on stdout: text or json"}
}

// parseOutputFormat checks an --output value: text or json, the same names for
// every command.
func parseOutputFormat(o string) (string, error) {
	switch o {
	case "text", "json":
		return o, nil
	default:
		return "", inputError(fmt.Errorf("--output: unknown format %q (want text or json)", o))
	}
}

// writeJSON prints v as the one JSON shape of every command's --output json: an
// object whose "ok" says whether the command did its whole job (exit 0 follows),
// beside v's own fields; lists are in named fields ("bundles", "csrs", "clusters"),
// never a bare array. A v with its own "ok" (the mesh reports) keeps it.
func writeJSON(w io.Writer, ok bool, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b := bytes.TrimSpace(buf.Bytes())
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return fmt.Errorf("internal error: the JSON result (%T) is not an object: %w", v, err)
	}
	if _, has := fields["ok"]; !has {
		head := []byte(fmt.Sprintf(`{"ok":%t`, ok))
		if len(fields) > 0 {
			head = append(head, ',')
		}
		b = append(head, b[1:]...)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

// progress reports per-item completion on stderr: a self-updating line on a
// terminal, one log line per item otherwise.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	log   *slog.Logger
	tty   bool
	total int
	done  int
	fails int
	verb  string
	last  time.Time
}

func newProgress(e *env, verb string, total int) *progress {
	return &progress{w: e.stderr, log: e.log, tty: e.stderrTTY, total: total, verb: verb}
}

// isTerminal says w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// lockedWriter serialises the writes of many goroutines to one writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// item records one finished item; attrs go to the log line.
func (p *progress) item(name string, err error, attrs ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done++
	if err != nil {
		p.fails++
	}
	if !p.tty {
		if err != nil {
			p.log.Error(p.verb+" failed", append([]any{"cluster", name, "err", err}, attrs...)...)
		} else {
			p.log.Info(p.verb, append([]any{"cluster", name}, attrs...)...)
		}
		return
	}
	if err != nil {
		fmt.Fprintf(p.w, "\r\033[K%s: %s failed: %v\n", name, p.verb, err)
	}
	if now := time.Now(); p.done == p.total || now.Sub(p.last) > 100*time.Millisecond {
		p.last = now
		fmt.Fprintf(p.w, "\r\033[K[%d/%d] %s %s", p.done, p.total, p.verb, name)
		if p.fails > 0 {
			fmt.Fprintf(p.w, " (%d failed)", p.fails)
		}
	}
}

// finish ends the terminal line.
func (p *progress) finish() {
	if p.tty && p.total > 0 {
		fmt.Fprintln(p.w)
	}
}

// parseKeyType checks --key-type.
func parseKeyType(s string) (ca.KeyType, error) {
	kt, err := ca.ParseKeyType(s)
	if err != nil {
		return "", inputError(fmt.Errorf("--key-type: %w", err))
	}
	return kt, nil
}

// parseFormat checks --format.
func parseFormat(s string) (ca.Format, error) {
	f, err := ca.ParseFormat(s)
	if err != nil {
		return "", inputError(fmt.Errorf("--format: %w", err))
	}
	return f, nil
}

// checkOrg checks --org, the subject's O= of roots and intermediates alike: one rule
// for all, it must not be empty (an empty O= and a silent "Istio" were both seen).
func checkOrg(org string) error {
	if strings.TrimSpace(org) == "" {
		return inputError(errors.New("--org must not be empty: it is the subject's O= (the default is Istio)"))
	}
	return nil
}

// parseDurationOrZero reads a duration flag where 0 (in any unit) turns something off.
func parseDurationOrZero(flag, s string) (time.Duration, error) {
	d, err := ca.ParseDurationOrZero(s)
	if err != nil {
		return 0, inputError(fmt.Errorf("--%s: %w", flag, err))
	}
	return d, nil
}

// parseDuration reads a duration flag: Go durations plus a "d" suffix for days.
func parseDuration(flag, s string) (time.Duration, error) {
	d, err := ca.ParseDuration(s)
	if err != nil {
		return 0, inputError(fmt.Errorf("--%s: %w", flag, err))
	}
	return d, nil
}

// plural is "1 handshake", "2 handshakes".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// mintList is intermediate create's JSON result.
type mintList struct {
	Bundles []ca.MintDirResult `json:"bundles"`
}

// csrList is intermediate csr's and intermediate status's JSON result.
type csrList struct {
	CSRs []ca.CSRDirStatus `json:"csrs"`
}

// importList is intermediate import's JSON result.
type importList struct {
	Imports []ca.ImportResult `json:"imports"`
}

// outError is the one wording of a refused --out FILE (crl sign, root bundle):
// "--out FILE: already exists (pass --force to replace it)", or the reason.
func outError(err error) error {
	switch {
	case errors.Is(err, ca.ErrExists):
		return inputError(fmt.Errorf("--out %w (pass --force to replace it)", err))
	case err != nil:
		return inputError(fmt.Errorf("--out %w", err))
	}
	return nil
}
