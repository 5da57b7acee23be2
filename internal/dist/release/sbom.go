package release

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// CycloneDX 1.6 JSON, the part of it an SBOM of a Go binary needs.
type (
	// BOM is a CycloneDX document.
	BOM struct {
		BOMFormat    string       `json:"bomFormat"`
		SpecVersion  string       `json:"specVersion"`
		SerialNumber string       `json:"serialNumber"`
		Version      int          `json:"version"`
		Metadata     BOMMetadata  `json:"metadata"`
		Components   []Component  `json:"components"`
		Dependencies []Dependency `json:"dependencies"`
	}
	// BOMMetadata names the binary described and the tool that described it.
	BOMMetadata struct {
		Timestamp string    `json:"timestamp"`
		Tools     BOMTools  `json:"tools"`
		Component Component `json:"component"`
	}
	// BOMTools lists the tools that made the BOM.
	BOMTools struct {
		Components []Component `json:"components"`
	}
	// Component is the binary, a Go module or the Go standard library.
	Component struct {
		Type       string     `json:"type"`
		BOMRef     string     `json:"bom-ref,omitempty"`
		Name       string     `json:"name"`
		Version    string     `json:"version,omitempty"`
		PURL       string     `json:"purl,omitempty"`
		Hashes     []Hash     `json:"hashes,omitempty"`
		Properties []Property `json:"properties,omitempty"`
	}
	// Hash is a digest of a component's bytes.
	Hash struct {
		Alg     string `json:"alg"`
		Content string `json:"content"`
	}
	// Property is a name/value pair.
	Property struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}
	// Dependency says what a component depends on.
	Dependency struct {
		Ref       string   `json:"ref"`
		DependsOn []string `json:"dependsOn"`
	}
)

func goPURL(path, version string) string {
	return "pkg:golang/" + path + "@" + version + "?type=module"
}

// SBOM describes the Go binary at bin as CycloneDX 1.6 JSON, from the module
// information the Go toolchain recorded in it (what `go version -m` prints): the
// main module at s.Version, every module linked in, the Go standard library, and
// the build settings (GOOS, GOARCH, CGO_ENABLED, ldflags). Its time is s.Date and
// its serial number derives from the binary's hash, so it reproduces.
func SBOM(bin string, s Stamp) ([]byte, error) {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("read Go build information of %s: %w", bin, err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	main := Component{
		Type:    "application",
		BOMRef:  goPURL(info.Main.Path, s.Version),
		Name:    info.Main.Path,
		Version: s.Version,
		PURL:    goPURL(info.Main.Path, s.Version),
		Hashes:  []Hash{{Alg: "SHA-256", Content: hex.EncodeToString(sum[:])}},
		Properties: []Property{
			{Name: "meshpki:commit", Value: s.Commit},
			{Name: "go:package", Value: info.Path},
			{Name: "go:version", Value: info.GoVersion},
		},
	}
	for _, st := range info.Settings {
		main.Properties = append(main.Properties, Property{Name: "go:build:" + st.Key, Value: st.Value})
	}
	std := Component{
		Type: "library", Name: "stdlib", Version: info.GoVersion,
		BOMRef: "pkg:golang/stdlib@" + info.GoVersion, PURL: "pkg:golang/stdlib@" + info.GoVersion,
	}
	comps := []Component{std}
	for _, d := range info.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		c := Component{Type: "library", Name: m.Path, Version: m.Version, BOMRef: goPURL(m.Path, m.Version), PURL: goPURL(m.Path, m.Version)}
		if m.Sum != "" {
			c.Properties = append(c.Properties, Property{Name: "go:module:sum", Value: m.Sum})
		}
		if d.Replace != nil {
			c.Properties = append(c.Properties, Property{Name: "go:module:replaces", Value: d.Path + "@" + d.Version})
		}
		comps = append(comps, c)
	}
	sort.Slice(comps, func(i, j int) bool { return comps[i].BOMRef < comps[j].BOMRef })
	refs := make([]string, len(comps))
	for i, c := range comps {
		refs[i] = c.BOMRef
	}
	h := sha256.Sum256([]byte("meshpki-sbom\x00" + hex.EncodeToString(sum[:]) + "\x00" + s.Version))
	h[6] = h[6]&0x0f | 0x50 // a name-based (SHA) UUID: version 5 layout
	h[8] = h[8]&0x3f | 0x80
	u := hex.EncodeToString(h[:16])
	bom := BOM{
		BOMFormat:    "CycloneDX",
		SpecVersion:  "1.6",
		SerialNumber: "urn:uuid:" + strings.Join([]string{u[:8], u[8:12], u[12:16], u[16:20], u[20:32]}, "-"),
		Version:      1,
		Metadata: BOMMetadata{
			Timestamp: s.Date.UTC().Format(time.RFC3339),
			Tools:     BOMTools{Components: []Component{{Type: "application", Name: "meshpki-dist", Version: s.Version}}},
			Component: main,
		},
		Components:   comps,
		Dependencies: []Dependency{{Ref: main.BOMRef, DependsOn: refs}},
	}
	out, err := json.MarshalIndent(bom, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
