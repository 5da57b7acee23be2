package ca

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DirVerdict is one bundle folder's verification.
type DirVerdict struct {
	Dir string `json:"dir"`
	OK  bool   `json:"ok"`
	*Report
}

// HandshakeResult is one real handshake, between Server and Client, standing for
// Pairs ordered pairs of bundles: every server of Server's class with every client
// of Client's (a class: bundles that trust the same roots and whose chains verify
// alike against every trust set of the mesh).
type HandshakeResult struct {
	Server string `json:"server"`
	Client string `json:"client"`
	Pairs  int    `json:"pairs"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
}

// DirsReport is VerifyDirs' result.
type DirsReport struct {
	OK      bool         `json:"ok"`
	Bundles []DirVerdict `json:"bundles"`
	// Mesh holds the problems of the bundles as one mesh.
	Mesh       []Problem         `json:"mesh"`
	Handshakes []HandshakeResult `json:"handshakes,omitempty"`
}

// VerifyDirsOptions tune VerifyDirs.
type VerifyDirsOptions struct {
	// Check tunes each bundle's checks.
	Check VerifyOptions
	// Strict counts warnings as failures.
	Strict bool
	// MTLS issues a workload certificate per bundle and checks that every ordered
	// pair completes mutual TLS (CheckMeshMTLS), with CRLs enforced as Envoy does.
	MTLS bool
	// Log receives the handshake classes at debug level; nil logs nothing.
	Log *slog.Logger
}

// VerifyDirs verifies bundle folders as istiod would (ParseBundle), and as one
// mesh: the same roots everywhere (SameRoots), each bundle's CRLs covering every CA
// of the others when CRLs are on (CheckMeshCRLs), and with MTLS real handshakes. A
// folder that cannot be read is an error (bad input); a bundle that does not
// verify is a verdict.
func VerifyDirs(ctx context.Context, dirs []string, opts VerifyDirsOptions) (*DirsReport, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := &DirsReport{OK: true, Mesh: []Problem{}}
	var reps []*Report
	bundles := map[int]*Bundle{}
	for _, dir := range dirs {
		st, err := os.Stat(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("%s: no such bundle folder", dir)
			}
			return nil, err
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("%s: not a folder (verify takes bundle folders)", dir)
		}
		files, err := ReadDir(dir)
		if err != nil {
			return nil, err
		}
		b, rep, _ := ParseBundle(files, opts.Check)
		checkKeyMode(rep, dir)
		ok := rep.OK() && !(opts.Strict && len(rep.Problems) > 0)
		if b != nil {
			bundles[len(res.Bundles)] = b
		}
		res.OK = res.OK && ok
		res.Bundles = append(res.Bundles, DirVerdict{Dir: dir, OK: ok, Report: rep})
		reps = append(reps, rep)
	}
	if p := SameRoots(dirs, reps); p != nil {
		res.Mesh = append(res.Mesh, *p)
		res.OK = false
	}
	if p := sharedCAs(dirs, bundles); p != nil {
		res.Mesh = append(res.Mesh, *p)
		res.OK = res.OK && !opts.Strict
	}
	// With CRLs: each bundle's ca-crl.pem must cover every CA of every other bundle.
	var members []CRLMember
	for i, name := range dirs {
		b := bundles[i]
		if b == nil {
			continue
		}
		m := CRLMember{Name: name, Chain: b.Chain}
		if b.CRLFile != nil {
			m.CRLs, _ = ParseCRLsPEM(b.CRLFile) // a bad file is the bundle's own error
		}
		members = append(members, m)
	}
	for _, p := range CheckMeshCRLs(members, time.Now()) {
		res.Mesh = append(res.Mesh, p)
		if p.Severity == SeverityError || opts.Strict {
			res.OK = false
		}
	}
	if opts.MTLS {
		hs, ok := mtlsMatrix(ctx, log, dirs, bundles, opts.Check.TrustDomain)
		res.Handshakes = hs
		res.OK = res.OK && ok
	}
	return res, nil
}

// checkKeyMode warns of a bundle folder's key file that its group or others may
// read: meshpki writes keys 0600, and whoever reads this one can sign for the
// cluster.
func checkKeyMode(rep *Report, dir string) {
	for _, name := range []string{CAKeyFile, TLSKeyFile} {
		st, err := os.Lstat(filepath.Join(dir, name))
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			rep.add(SeverityWarning, "key-mode", name, "is readable by its group or others (%#o): whoever reads it can sign for this cluster; keep it 0600", perm)
		}
	}
}

// sharedCAs is a mesh warning naming bundles that hold the same CA certificate:
// a revoke or a rotation of one is of them all, and their workloads' identities
// cannot be told apart by CA.
func sharedCAs(dirs []string, bundles map[int]*Bundle) *Problem {
	byCA := map[string][]string{}
	var order []string
	for i, dir := range dirs {
		b := bundles[i]
		if b == nil || b.Cert == nil {
			continue
		}
		fp := Fingerprint(b.Cert)
		if byCA[fp] == nil {
			order = append(order, fp)
		}
		byCA[fp] = append(byCA[fp], dir)
	}
	var groups []string
	for _, fp := range order {
		if len(byCA[fp]) > 1 {
			groups = append(groups, strings.Join(byCA[fp], " and "))
		}
	}
	if len(groups) == 0 {
		return nil
	}
	return &Problem{Severity: SeverityWarning, Check: "shared-ca",
		Message: fmt.Sprintf("%s hold the same CA certificate: a revoke or rotation of one is of all; mint one intermediate per cluster", strings.Join(groups, "; "))}
}

// mtlsMatrix issues one workload per valid bundle and works out, for every ordered
// pair, whether they accept each other: each workload chain is checked against
// every distinct trust set, and one real handshake runs per ordered pair of classes
// (CheckMeshMTLS), so 1,000 bundles take seconds, not hours.
func mtlsMatrix(ctx context.Context, log *slog.Logger, dirs []string, bundles map[int]*Bundle, trustDomain string) ([]HandshakeResult, bool) {
	if trustDomain == "" {
		trustDomain = DefaultTrustDomain
	}
	ok := true
	var out []HandshakeResult
	var ws []*Workload
	var wdirs []string
	for i := range dirs {
		b := bundles[i]
		if b == nil {
			continue
		}
		sa := fmt.Sprintf("workload-%d", i)
		w, err := b.IssueWorkload(SPIFFEID(trustDomain, "default", sa), time.Hour)
		if err != nil {
			out = append(out, HandshakeResult{Server: dirs[i], Client: dirs[i], Pairs: 1, Error: "issue workload certificate: " + err.Error()})
			ok = false
			continue
		}
		ws, wdirs = append(ws, w), append(wdirs, dirs[i])
	}
	m, err := CheckMeshMTLS(ctx, ws)
	if err != nil {
		return append(out, HandshakeResult{Error: err.Error()}), false
	}
	log.Debug("mtls classes", "workloads", len(ws), "classes", len(m.Classes), "handshakes", len(m.Results))
	for _, r := range m.Results {
		h := HandshakeResult{Server: wdirs[r.Server], Client: wdirs[r.Client], Pairs: r.Pairs, OK: r.Err == nil}
		if r.Err != nil {
			h.Error = r.Err.Error()
			ok = false
		}
		log.Debug("handshake", "server", h.Server, "client", h.Client, "pairs", h.Pairs, "ok", h.OK)
		out = append(out, h)
	}
	if len(ws) < len(dirs) {
		ok = false
	}
	return out, ok
}
