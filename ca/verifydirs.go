package ca

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
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
