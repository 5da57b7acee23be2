package ca

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The offline-root workflow as folder jobs: WriteCSRDirs makes each cluster's key
// and CSR in out/<cluster>/, the CSRs are signed elsewhere, ImportSignedDirs takes
// the signed certificates back, and ReadCSRDirs says where each folder stands.

// CSRWriteOptions tune WriteCSRDirs.
type CSRWriteOptions struct {
	// Force replaces existing folders (each kept as a backup, see WriteDir).
	Force bool
	// Log receives the output folder's lock and clean-up notes; nil logs nothing.
	Log *slog.Logger
	// Progress, if set, is called as each cluster's key and CSR are made.
	Progress func(cluster string)
}

// WriteCSRDirs makes, for each profile, a key and a CSR (NewCSR) and writes them
// as out/<cluster>/ (ca-key.pem 0600, ca-csr.pem), all or none: every folder is
// checked before the first key is made, and the folders are written as one batch.
// It returns where each folder stands and the backups made of replaced ones (by
// folder). An existing folder without Force wraps ErrExists.
func WriteCSRDirs(ctx context.Context, out string, profiles []Profile, opts CSRWriteOptions) ([]CSRDirStatus, map[string]string, error) {
	for _, p := range profiles {
		if err := CheckWritable(filepath.Join(out, p.Cluster), opts.Force); err != nil {
			return nil, nil, err
		}
	}
	unlock, err := PrepareOutDir(ctx, out, opts.Log)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	batch := NewBatch(WriteOptions{Force: opts.Force})
	for _, p := range profiles {
		csrPEM, keyPEM, err := NewCSR(p)
		if err == nil {
			err = batch.Stage(filepath.Join(out, p.Cluster), map[string][]byte{CAKeyFile: keyPEM, CSRFile: csrPEM})
		}
		if err != nil {
			return nil, nil, fmt.Errorf("cluster %s: %w", p.Cluster, err)
		}
		if opts.Progress != nil {
			opts.Progress(p.Cluster)
		}
	}
	backups, errs := batch.Commit()
	var st []CSRDirStatus
	for _, p := range profiles {
		st = append(st, ReadCSRDir(filepath.Join(out, p.Cluster)))
	}
	for dir, err := range errs {
		return st, backups, fmt.Errorf("%s: %w", dir, err)
	}
	return st, backups, nil
}

// clusterDirs lists the cluster folders of out, sorted: folders not hidden and not
// backups (IsBackupName).
func clusterDirs(out string) ([]string, error) {
	entries, err := os.ReadDir(out)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, en := range entries {
		if en.IsDir() && !strings.HasPrefix(en.Name(), ".") && !IsBackupName(en.Name()) {
			names = append(names, en.Name())
		}
	}
	return names, nil
}

// ReadCSRDirs tells where every cluster folder of out stands (ReadCSRDir),
// backups left out.
func ReadCSRDirs(out string) ([]CSRDirStatus, error) {
	names, err := clusterDirs(out)
	if err != nil {
		return nil, err
	}
	var st []CSRDirStatus
	for _, n := range names {
		st = append(st, ReadCSRDir(filepath.Join(out, n)))
	}
	return st, nil
}

// WaitingClusters lists the clusters of out whose CSR waits for a signed
// certificate.
func WaitingClusters(out string) ([]string, error) {
	names, err := clusterDirs(out)
	if err != nil {
		return nil, err
	}
	var waiting []string
	for _, n := range names {
		if ReadCSRDir(filepath.Join(out, n)).State == CSRWaiting {
			waiting = append(waiting, n)
		}
	}
	return waiting, nil
}

// FindSignedFile finds cluster's signed certificate in folder dir: <cluster>.pem
// or <cluster>.crt.
func FindSignedFile(dir, cluster string) (string, error) {
	for _, ext := range []string{".pem", ".crt"} {
		name := filepath.Join(dir, cluster+ext)
		if _, err := os.Stat(name); err == nil {
			return name, nil
		}
	}
	return "", fmt.Errorf("no %s.pem or %s.crt for cluster %s", cluster, cluster, cluster)
}

// ImportRequest is one import run: each cluster's signed certificate (a file), the
// chain of CAs between them and the root (may be empty), and the roots they chain
// to, read by the caller.
type ImportRequest struct {
	// Certs maps each cluster to its signed certificate's file.
	Certs map[string]string
	// ChainPEM and RootsPEM are the chain's and the roots' PEM; Chain and Roots
	// name their files, for messages (Chain may be "").
	ChainPEM, RootsPEM []byte
	Chain, Roots       string
	// Force replaces a bundle imported already.
	Force bool
	ImportOptions
}

// ImportResult is one cluster's outcome of ImportSignedDirs.
type ImportResult struct {
	CSRDirStatus
	// Error is Err's message, for JSON.
	Error string `json:"error,omitempty"`
	Err   error  `json:"-"`
}

// ImportSignedDirs imports each cluster's signed certificate into out/<cluster>/
// (ImportDir), in the order of the cluster names. One refused certificate does not
// stop the others; each refusal names the file it is about. Only a failure to lock
// out fails the whole run.
func ImportSignedDirs(ctx context.Context, out string, req ImportRequest, log *slog.Logger, progress func(cluster string, err error)) ([]ImportResult, error) {
	unlock, err := PrepareOutDir(ctx, out, log)
	if err != nil {
		return nil, err
	}
	defer unlock()
	clusters := make([]string, 0, len(req.Certs))
	for n := range req.Certs {
		clusters = append(clusters, n)
	}
	sort.Strings(clusters)
	var results []ImportResult
	for _, n := range clusters {
		dir := filepath.Join(out, n)
		certPEM, err := ReadInputFile(req.Certs[n])
		if err == nil {
			if _, serr := os.Stat(dir); errors.Is(serr, fs.ErrNotExist) {
				err = fmt.Errorf("%s: no such CSR folder: %w", dir, ErrNotWaiting)
			} else {
				_, err = ImportDir(dir, certPEM, req.ChainPEM, req.RootsPEM, req.Force, req.ImportOptions)
			}
		}
		err = nameImportFile(err, req, n)
		if progress != nil {
			progress(n, err)
		}
		r := ImportResult{CSRDirStatus: ReadCSRDir(dir), Err: err}
		if err != nil {
			r.Error = err.Error()
		}
		results = append(results, r)
	}
	return results, nil
}

// nameImportFile puts the file a refusal is about in front of it.
func nameImportFile(err error, req ImportRequest, cluster string) error {
	var re *RootError
	if !errors.As(err, &re) {
		return err
	}
	file := req.Certs[cluster]
	switch re.Part {
	case PartChain:
		file = req.Chain
		if file == "" {
			file = "the chain (not given)"
		}
	case PartRoots:
		file = req.Roots
	}
	return fmt.Errorf("%s: %w", file, re.Err)
}
