package metrics

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Three runs into one file: counters add up across runs, a failed run keeps the
// last known not-after and the last success, and clusters a run did not touch keep
// their series.
func TestUpdateCarriesAcrossRuns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshpki.prom")
	t1 := time.Date(2026, 11, 26, 3, 17, 0, 0, time.UTC)
	na := time.Date(2027, 11, 26, 0, 0, 0, 0, time.UTC)
	nb := time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)

	if note, err := Update(path, t1, []Run{{Cluster: "east", OK: true, Rotated: true, NotAfter: na}, {Cluster: "west", OK: true, NotAfter: nb}}); err != nil || note != "" {
		t.Fatal(note, err)
	}
	t2 := t1.Add(24 * time.Hour)
	if _, err := Update(path, t2, []Run{{Cluster: "east", OK: false}, {Cluster: "west", OK: true, Rotated: true, NotAfter: nb.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	t3 := t2.Add(24 * time.Hour)
	if _, err := Update(path, t3, []Run{{Cluster: "east", OK: false}}); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("Prometheus' parser refuses the file: %v", err)
	}
	if got := mfs[Failures].GetType().String(); got != "COUNTER" {
		t.Errorf("%s has type %s", Failures, got)
	}
	s, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	e, w := s["east"], s["west"]
	want := map[string][2]float64{
		NotAfter:     {float64(na.Unix()), float64(nb.Add(time.Hour).Unix())},
		LastSuccess:  {float64(t1.Unix()), float64(t2.Unix())},
		LastRotation: {float64(t1.Unix()), float64(t2.Unix())},
		LastRun:      {float64(t3.Unix()), float64(t2.Unix())},
		Healthy:      {0, 1},
		Failures:     {2, 0},
		Rotations:    {1, 1},
	}
	get := func(x *Series, name string) float64 {
		return map[string]float64{NotAfter: x.NotAfter, LastSuccess: x.LastSuccess, LastRotation: x.LastRotation,
			LastRun: x.LastRun, Healthy: x.Healthy, Failures: x.Failures, Rotations: x.Rotations}[name]
	}
	for name, v := range want {
		if got := get(e, name); got != v[0] {
			t.Errorf("east %s = %v, want %v", name, got, v[0])
		}
		if got := get(w, name); got != v[1] {
			t.Errorf("west %s = %v, want %v", name, got, v[1])
		}
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v", st.Mode(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// A cluster never read has no not-after sample rather than a false 0.
func TestFormatOmitsUnknownNotAfter(t *testing.T) {
	data, err := Format(Merge(map[string]*Series{}, time.Unix(1000, 0), []Run{{Cluster: "east", OK: false}}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), NotAfter+"{") || !strings.Contains(string(data), Failures+`{cluster="east"} 1`) {
		t.Fatalf("file:\n%s", data)
	}
}

func TestUpdateReplacesAnUnreadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshpki.prom")
	if err := os.WriteFile(path, []byte("this is { not prometheus\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	note, err := Update(path, time.Now(), []Run{{Cluster: "east", OK: true}})
	if err != nil || !strings.Contains(note, "could not be parsed") {
		t.Fatalf("note %q, err %v", note, err)
	}
	if s, err := Read(path); err != nil || s["east"].Healthy != 1 {
		t.Fatalf("after replacing: %v, %v", s, err)
	}
}

func TestCheckPath(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "m.prom"), ""},
		{filepath.Join(dir, "m.txt"), "ending in .prom"},
		{filepath.Join(dir, "missing", "m.prom"), "no such file"},
	} {
		err := CheckPath(tc.path)
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.path, err, tc.want)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "d.prom"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := CheckPath(filepath.Join(dir, "d.prom")); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a folder: %v", err)
	}
}

// TestConcurrentUpdatesLoseNothing: runs updating one metrics file at once (two
// rotate runs from different cron jobs) each count their failure.
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshpki.prom")
	const n = 24
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := Update(path, time.Now(), []Run{{Cluster: "east", OK: false}})
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	s, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s["east"].Failures; got != n {
		t.Fatalf("failures_total = %v after %d concurrent failed runs", got, n)
	}
}

func TestCRLNextUpdateOnlyWithCRLs(t *testing.T) {
	next := time.Unix(5000, 0)
	series := Merge(map[string]*Series{}, time.Unix(1000, 0), []Run{{Cluster: "east", OK: true, CRLNextUpdate: next}, {Cluster: "west", OK: true}})
	data, err := Format(series)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), CRLNextUpdate+`{cluster="east"} 5000`) || strings.Contains(string(data), CRLNextUpdate+`{cluster="west"}`) {
		t.Fatalf("file:\n%s", data)
	}
	back, err := Parse(data)
	if err != nil || back["east"].CRLNextUpdate != 5000 {
		t.Fatalf("read back: %v %+v", err, back["east"])
	}
	// A run that does not read the CRLs keeps the last value.
	if s := Merge(back, time.Unix(2000, 0), []Run{{Cluster: "east", OK: true}}); s["east"].CRLNextUpdate != 5000 {
		t.Error("CRL next update lost")
	}
}
