// Package metrics keeps meshpki rotate's results in a Prometheus text file for
// node_exporter's textfile collector (--collector.textfile.directory).
//
// A text file holds no state between runs by itself, so Update reads the previous
// file back, merges this run into it and writes the whole file again, atomically
// (internal/atomicfs: a temporary file in the same folder, fsynced, renamed over
// the old one): counters keep
// counting across runs, timestamps of past successes survive a failed run, and a
// run over some clusters leaves the others' series as they were. Deleting the file
// resets the counters, which Prometheus' rate() and increase() treat as a counter
// reset. Two runs that update one file at the same time take turns under a lock on
// its folder (internal/atomicfs), so neither loses the other's increments.
package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meshpki/meshpki/internal/atomicfs"
)

// The metrics Update writes, each with a cluster label.
const (
	// NotAfter is the not-after of the intermediate installed in the cluster, as
	// last read (gauge, Unix seconds). Absent until a run has read it once.
	NotAfter = "meshpki_intermediate_not_after_seconds"
	// LastSuccess is when a run last left the cluster healthy: rotated, or not
	// due (gauge, Unix seconds; 0: never).
	LastSuccess = "meshpki_rotation_last_success_timestamp_seconds"
	// LastRotation is when a run last installed a new intermediate (gauge, Unix
	// seconds; 0: never).
	LastRotation = "meshpki_rotation_last_rotation_timestamp_seconds"
	// LastRun is when a run last worked on the cluster (gauge, Unix seconds).
	LastRun = "meshpki_rotation_last_run_timestamp_seconds"
	// Healthy is 1 when the last run left the cluster healthy, else 0 (gauge).
	Healthy = "meshpki_rotation_healthy"
	// Failures counts runs that failed for the cluster (counter).
	Failures = "meshpki_rotation_failures_total"
	// Rotations counts new intermediates installed (counter).
	Rotations = "meshpki_rotations_total"
	// CRLNextUpdate is the earliest nextUpdate of the CRLs in the cluster's
	// ca-crl.pem, as last read (gauge, Unix seconds). Absent while the cluster has
	// no CRLs: past it, every peer's Envoy refuses the mesh's workloads.
	CRLNextUpdate = "meshpki_crl_next_update_seconds"

	// Label is the label naming the cluster.
	Label = "cluster"
)

type family struct {
	name string
	help string
	typ  dto.MetricType
	get  func(*Series) (float64, bool)
}

// families is the file's content, in the order written.
func families() []family {
	return []family{
		{NotAfter, "Not-after of the intermediate CA installed in the cluster's cacerts, as last read (Unix seconds).", dto.MetricType_GAUGE,
			func(s *Series) (float64, bool) { return s.NotAfter, s.NotAfter != 0 }},
		{LastSuccess, "When meshpki rotate last left the cluster healthy, rotated or not due (Unix seconds; 0: never).", dto.MetricType_GAUGE,
			func(s *Series) (float64, bool) { return s.LastSuccess, true }},
		{LastRotation, "When meshpki rotate last installed a new intermediate CA in the cluster (Unix seconds; 0: never).", dto.MetricType_GAUGE,
			func(s *Series) (float64, bool) { return s.LastRotation, true }},
		{LastRun, "When meshpki rotate last worked on the cluster (Unix seconds).", dto.MetricType_GAUGE,
			func(s *Series) (float64, bool) { return s.LastRun, true }},
		{Healthy, "1 when the last meshpki rotate run left the cluster healthy, 0 when it failed there.", dto.MetricType_GAUGE,
			func(s *Series) (float64, bool) { return s.Healthy, true }},
		{Failures, "meshpki rotate runs that failed for the cluster, across runs (kept in this file).", dto.MetricType_COUNTER,
			func(s *Series) (float64, bool) { return s.Failures, true }},
		{Rotations, "New intermediate CAs meshpki rotate installed in the cluster, across runs (kept in this file).", dto.MetricType_COUNTER,
			func(s *Series) (float64, bool) { return s.Rotations, true }},
		{CRLNextUpdate, "Earliest nextUpdate of the CRLs in the cluster's ca-crl.pem, as last read (Unix seconds); absent without CRLs.", dto.MetricType_GAUGE,
			func(s *Series) (float64, bool) { return s.CRLNextUpdate, s.CRLNextUpdate != 0 }},
	}
}

// Series is one cluster's values.
type Series struct {
	NotAfter     float64
	LastSuccess  float64
	LastRotation float64
	LastRun      float64
	Healthy      float64
	Failures     float64
	Rotations    float64
	// CRLNextUpdate is 0 when the cluster has no CRLs.
	CRLNextUpdate float64
}

func (s *Series) set(name string, v float64) {
	switch name {
	case NotAfter:
		s.NotAfter = v
	case LastSuccess:
		s.LastSuccess = v
	case LastRotation:
		s.LastRotation = v
	case LastRun:
		s.LastRun = v
	case Healthy:
		s.Healthy = v
	case Failures:
		s.Failures = v
	case Rotations:
		s.Rotations = v
	case CRLNextUpdate:
		s.CRLNextUpdate = v
	}
}

// Run is one cluster's outcome in this run.
type Run struct {
	Cluster string
	// OK: the cluster is healthy after the run (rotated or not due).
	OK bool
	// Rotated: a new intermediate was installed.
	Rotated bool
	// NotAfter is the installed intermediate's not-after after the run; zero when
	// the run could not read it (the previous value is kept).
	NotAfter time.Time
	// CRLNextUpdate is the earliest nextUpdate of the cluster's CRLs after the run;
	// zero when it has none or the run did not read them (the previous value is kept).
	CRLNextUpdate time.Time
}

// Read parses a file Update wrote into cluster -> values. A missing file is empty.
func Read(path string) (map[string]*Series, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]*Series{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("metrics file %s: %w", path, err)
	}
	return Parse(data)
}

// Parse reads the text format into cluster -> values, ignoring metrics other than
// the ones Update writes.
func Parse(data []byte) (map[string]*Series, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	out := map[string]*Series{}
	for _, f := range families() {
		mf, ok := mfs[f.name]
		if !ok {
			continue
		}
		for _, m := range mf.GetMetric() {
			cluster := ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == Label {
					cluster = lp.GetValue()
				}
			}
			if cluster == "" {
				continue
			}
			v := m.GetGauge().GetValue()
			if mf.GetType() == dto.MetricType_COUNTER {
				v = m.GetCounter().GetValue()
			}
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				continue
			}
			s := out[cluster]
			if s == nil {
				s = &Series{}
				out[cluster] = s
			}
			s.set(f.name, v)
		}
	}
	return out, nil
}

// Merge applies this run's outcomes at now to the previous values (which it
// changes) and returns them.
func Merge(prev map[string]*Series, now time.Time, runs []Run) map[string]*Series {
	ts := float64(now.Unix())
	for _, r := range runs {
		s := prev[r.Cluster]
		if s == nil {
			s = &Series{}
			prev[r.Cluster] = s
		}
		s.LastRun = ts
		if !r.NotAfter.IsZero() {
			s.NotAfter = float64(r.NotAfter.Unix())
		}
		if !r.CRLNextUpdate.IsZero() {
			s.CRLNextUpdate = float64(r.CRLNextUpdate.Unix())
		}
		if r.OK {
			s.Healthy = 1
			s.LastSuccess = ts
		} else {
			s.Healthy = 0
			s.Failures++
		}
		if r.Rotated {
			s.Rotations++
			s.LastRotation = ts
		}
	}
	return prev
}

// Format renders the values in the text format, metrics and clusters sorted. It
// writes no sample timestamps: the textfile collector refuses them.
func Format(series map[string]*Series) ([]byte, error) {
	clusters := make([]string, 0, len(series))
	for c := range series {
		clusters = append(clusters, c)
	}
	slices.Sort(clusters)
	var buf bytes.Buffer
	for _, f := range families() {
		mf := &dto.MetricFamily{Name: ptr(f.name), Help: ptr(f.help), Type: f.typ.Enum()}
		for _, c := range clusters {
			v, ok := f.get(series[c])
			if !ok {
				continue
			}
			m := &dto.Metric{Label: []*dto.LabelPair{{Name: ptr(Label), Value: ptr(c)}}}
			if f.typ == dto.MetricType_COUNTER {
				m.Counter = &dto.Counter{Value: ptr(v)}
			} else {
				m.Gauge = &dto.Gauge{Value: ptr(v)}
			}
			mf.Metric = append(mf.Metric, m)
		}
		if len(mf.Metric) == 0 {
			continue
		}
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			return nil, fmt.Errorf("metric %s: %w", f.name, err)
		}
	}
	return buf.Bytes(), nil
}

// lockWait bounds how long Update waits for another run's update of the same folder.
const lockWait = time.Minute

// Update reads the file at path (if any), merges this run's outcomes at now and
// writes it back atomically, readable by all (0644). A file that cannot be parsed
// is replaced; the returned note says so, and its counters start again from zero.
// The read, merge and write happen holding a lock on path's folder (atomicfs.LockDir), so
// two runs updating one file at once never lose each other's increments.
func Update(path string, now time.Time, runs []Run) (note string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), lockWait)
	defer cancel()
	lock, err := atomicfs.LockDir(ctx, filepath.Dir(path), nil)
	if err != nil {
		return "", fmt.Errorf("metrics file %s: %w", path, err)
	}
	defer lock.Unlock()
	prev, err := Read(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return "", err
		}
		note = fmt.Sprintf("metrics file %s could not be parsed (%v): replaced, its counters start again from 0", path, err)
		prev = map[string]*Series{}
	}
	data, err := Format(Merge(prev, now, runs))
	if err != nil {
		return note, err
	}
	if err := atomicfs.WriteFile(path, data, 0o644); err != nil {
		return note, fmt.Errorf("metrics file %s: %w", path, err)
	}
	return note, nil
}

// CheckPath checks, before a run, that path can become a metrics file: its folder
// exists, and node_exporter's textfile collector will read it (its name ends in
// .prom).
func CheckPath(path string) error {
	if !strings.HasSuffix(path, ".prom") {
		return fmt.Errorf("metrics file %s: node_exporter's textfile collector only reads files ending in .prom", path)
	}
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("metrics file %s: %w", path, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("metrics file %s: %s is not a folder", path, dir)
	}
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		return fmt.Errorf("metrics file %s: not a regular file", path)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
