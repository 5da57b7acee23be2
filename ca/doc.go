// Package ca is meshpki's certificate logic: the per-cluster intermediate CAs of an
// Istio mesh and the root they share.
//
//   - Roots: CreateRoot, ParseRoot (the one root parser; ReadRootDir reads a root
//     folder with it), CheckRootCert, RootProfile.
//   - Signing CAs below the root: a SigningCA is the CA that signs cluster
//     intermediates with its chain up to the root (ParseSigningCA, ReadCADir,
//     NewSigningCAIssuer; chains of any depth); Issuer.Chain and RootOf say what an
//     issuer signs under, and CheckProfiles checks a profile against all of it.
//   - Offline roots: NewCSR makes a cluster's key and a CSR another CA can sign;
//     ImportSigned and ImportDir check the signed certificate and assemble the
//     bundle; ReadCSRDir says whether a folder waits or was imported.
//   - Intermediates: a Profile (IntermediateProfile is Istio's tools/certs
//     profile), an Issuer that signs (LocalIssuer with a root in memory; package
//     vault has one backed by a Vault PKI mount), and Mint, which makes the key
//     and CSR locally, has the issuer sign and checks what came back. MintEach
//     mints many concurrently.
//   - Bundles: a Bundle is what istiod loads from the cacerts Secret, in Istio's
//     or the tls layout (Files, ParseBundle, DetectFormat); Verify and
//     Bundle.Check apply istiod's rules and stricter ones; SameRoots, SubsetOf and
//     KeepRootsFile reason about the roots files of a mesh; Bundle.SignedUnder
//     (signatures only) and Bundle.VerifiesAt (the full chain check at a time)
//     say what a bundle chains to; ContainsCert and IsSelfSigned are the small
//     set tests.
//   - Renewal: RenewBefore says when a certificate is due (RenewAt, Due).
//   - mTLS: IssueWorkload, Handshake and CheckMeshMTLS prove that the bundles of
//     a mesh make one mesh.
//   - Folders: WriteDir and Batch write bundle folders atomically (on
//     internal/atomicfs), ReadDir and ReadInputFile read them safely.
//
// The library reads no environment variables and prints nothing; errors name the
// file or field at fault and never carry key material. Times come from the caller:
// a now argument, or a Now field (Profile.Now, VerifyOptions.Now, WriteOptions.Now)
// that defaults to time.Now. The root-rotation planner is package ca/rotation.
package ca
