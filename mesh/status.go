package mesh

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

// MeshProblems checks statuses as one mesh: every cluster must have a usable
// cacerts, and all must trust the same roots. It returns one problem per finding,
// none when the mesh is consistent.
func MeshProblems(statuses []*k8s.ClusterStatus) []ca.Problem {
	var problems []ca.Problem
	byVerdict := map[k8s.Verdict][]string{}
	var names []string
	var reps []*ca.Report
	for _, st := range statuses {
		byVerdict[st.Verdict] = append(byVerdict[st.Verdict], st.Cluster)
		if st.Report != nil {
			names = append(names, st.Cluster)
			reps = append(reps, st.Report)
		}
	}
	if p := ca.SameRoots(names, reps); p != nil {
		problems = append(problems, *p)
	}
	add := func(v k8s.Verdict, check, what string) {
		if cl := byVerdict[v]; len(cl) > 0 {
			slices.Sort(cl)
			problems = append(problems, ca.Problem{Severity: ca.SeverityError, Check: check,
				Message: fmt.Sprintf("%s: %s", strings.Join(cl, ", "), what)})
		}
	}
	add(k8s.VerdictMissing, "mesh-missing", "no cacerts Secret: istiod there signs with its own self-signed root, so cross-cluster mTLS fails")
	add(k8s.VerdictBroken, "mesh-broken", "cacerts fails istiod's checks: istiod will not load it")
	add(k8s.VerdictError, "mesh-unreadable", "could not be read, its state is unknown")
	byIstiod := map[k8s.IstiodState][]string{}
	for _, st := range statuses {
		if st.Istiod != nil {
			byIstiod[st.Istiod.State] = append(byIstiod[st.Istiod.State], st.Cluster)
		}
	}
	for _, x := range []struct {
		state k8s.IstiodState
		sev   ca.Severity
		what  string
	}{
		{k8s.IstiodRefused, ca.SeverityError, "istiod did not take the roots in cacerts and still signs with its old CA (see the istiod column)"},
		{k8s.IstiodSelfSigned, ca.SeverityError, "istiod signs with its own self-signed CA, not cacerts: restart it"},
		{k8s.IstiodNotYet, ca.SeverityWarning, "istiod has not taken the latest cacerts yet"},
	} {
		if cl := byIstiod[x.state]; len(cl) > 0 {
			slices.Sort(cl)
			problems = append(problems, ca.Problem{Severity: x.sev, Check: "mesh-istiod-" + string(x.state), Message: fmt.Sprintf("%s: %s", strings.Join(cl, ", "), x.what)})
		}
	}
	return append(problems, meshCRLProblems(statuses, time.Now())...)
}

// meshCRLProblems is ca.CheckMeshCRLs over the clusters read.
func meshCRLProblems(statuses []*k8s.ClusterStatus, now time.Time) []ca.Problem {
	var members []ca.CRLMember
	for _, st := range statuses {
		members = append(members, ca.CRLMember{Name: st.Cluster, Chain: st.Chain, CRLs: st.CRLList})
	}
	return ca.CheckMeshCRLs(members, now)
}

// StatusOptions controls Status.
type StatusOptions struct {
	// Status is how each cluster is read (k8s.Status).
	Status k8s.StatusOptions
	// Strict counts warnings as failures.
	Strict bool
	// Concurrency bounds the clusters read at once (see k8s.Each).
	Concurrency int
	// Progress, if set, is called as each cluster is read.
	Progress func(k8s.Result[*k8s.ClusterStatus])
}

// StatusReport is every cluster's cacerts and istiod, and the mesh's problems. It
// never holds key material.
type StatusReport struct {
	// OK: every cluster is ok (no warnings either, with Strict) and the mesh has no
	// problem.
	OK       bool                 `json:"ok"`
	Clusters []*k8s.ClusterStatus `json:"clusters"`
	// Mesh holds the mesh-wide problems; empty when the mesh is consistent.
	Mesh []ca.Problem `json:"mesh"`
}

// Verdict is OK when the report is.
func (r *StatusReport) Verdict() Verdict {
	if !r.OK {
		return Failed
	}
	return OK
}

// Status reads every cluster's cacerts and istiod (k8s.Status), concurrently, and
// checks them as one mesh (MeshProblems).
func Status(ctx context.Context, clusters []*k8s.Cluster, opts StatusOptions) *StatusReport {
	results := k8s.Each(ctx, clusters, opts.Concurrency, func(ctx context.Context, cl *k8s.Cluster) (*k8s.ClusterStatus, error) {
		return k8s.Status(ctx, cl, opts.Status)
	}, opts.Progress)
	rep := &StatusReport{OK: true, Mesh: []ca.Problem{}}
	for _, r := range results {
		st := r.Value
		if st == nil { // not started
			st = &k8s.ClusterStatus{Cluster: r.Cluster.Name, Namespace: namespaceOr(opts.Status.Namespace), Verdict: k8s.VerdictError, Error: r.Err.Error()}
		}
		switch st.Verdict {
		case k8s.VerdictOK:
		case k8s.VerdictWarning:
			rep.OK = rep.OK && !opts.Strict
		default:
			rep.OK = false
		}
		rep.Clusters = append(rep.Clusters, st)
	}
	setTrust(rep.Clusters)
	rep.Mesh = append(rep.Mesh, MeshProblems(rep.Clusters)...)
	for _, p := range rep.Mesh {
		if p.Severity == ca.SeverityError || opts.Strict {
			rep.OK = false
		}
	}
	return rep
}

// Where a cluster's trust comes from (k8s.ClusterStatus.Trust).
const (
	TrustShared          = "shared root"
	TrustOther           = "other root"
	TrustSelfSigned      = "istiod self-signed"
	TrustAdoptedSelfSign = "istiod self-signed (adopted)"
)

// setTrust says of each cluster where its trust comes from: istiod's own CA
// (without cacerts, or adopted into a convergence), the mesh's shared root (the
// target of a convergence or root rotation under way, else the root most
// clusters' CAs chain to), or another root.
func setTrust(sts []*k8s.ClusterStatus) {
	// The most common root, the first cluster's in a tie (as SameRoots takes the
	// first cluster as the reference).
	shared, count := "", map[string]int{}
	var order []string
	for _, st := range sts {
		if st.RootRotation != nil && st.RootRotation.NewRoot != "" {
			shared = st.RootRotation.NewRoot
		}
		if n := len(st.Chain); n > 0 {
			fp := ca.Fingerprint(st.Chain[n-1])
			if count[fp] == 0 {
				order = append(order, fp)
			}
			count[fp]++
		}
	}
	if shared == "" {
		for _, fp := range order {
			if count[fp] > count[shared] {
				shared = fp
			}
		}
	}
	for _, st := range sts {
		switch {
		case st.Istiod != nil && st.Istiod.State == k8s.IstiodSelfSigned:
			st.Trust = TrustSelfSigned
		case len(st.Chain) > 0 && ca.IsSelfSigned(st.Chain[0]) && len(st.Chain) == 1:
			st.Trust = TrustAdoptedSelfSign
		case len(st.Chain) > 0 && ca.Fingerprint(st.Chain[len(st.Chain)-1]) == shared:
			st.Trust = TrustShared
		case len(st.Chain) > 0:
			st.Trust = TrustOther
		}
	}
}
