{{- define "meshpki.labels" -}}
app.kubernetes.io/name: meshpki
{{- end }}

{{- define "meshpki.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{- define "meshpki.checks" -}}
{{- if not (has .Values.root.source (list "vault-pki" "vault-kv" "secret")) }}
{{- fail (printf "root.source %q: want vault-pki, vault-kv or secret" .Values.root.source) }}
{{- end }}
{{- if not (has .Values.vault.auth.method (list "kubernetes" "approle" "token")) }}
{{- fail (printf "vault.auth.method %q: want kubernetes, approle or token" .Values.vault.auth.method) }}
{{- end }}
{{- if not (has .Values.clusters.mode (list "kubeconfig" "in-cluster")) }}
{{- fail (printf "clusters.mode %q: want kubeconfig or in-cluster" .Values.clusters.mode) }}
{{- end }}
{{- if and (ne .Values.root.source "secret") (has .Values.vault.auth.method (list "approle" "token")) (not .Values.vault.auth.secretName) }}
{{- fail (printf "vault.auth.method %s needs vault.auth.secretName" .Values.vault.auth.method) }}
{{- end }}
{{- end }}

{{- define "meshpki.usesVault" -}}
{{- if ne .Values.root.source "secret" }}true{{ end }}
{{- end }}

{{- define "meshpki.k8sAuth" -}}
{{- if and (include "meshpki.usesVault" .) (eq .Values.vault.auth.method "kubernetes") }}true{{ end }}
{{- end }}
