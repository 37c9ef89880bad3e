{{/* Object names are fixed, as in manifests/: the admission policies, the Role's resourceNames
and the webhook's flags name them, and the cluster-scoped objects make one install per cluster. */}}
{{- define "wiw.name" -}}workload-identity-webhook{{- end -}}

{{- define "wiw.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "wiw.name" . }}
{{- end -}}

{{- define "wiw.labels" -}}
app.kubernetes.io/name: {{ include "wiw.name" . }}
app.kubernetes.io/part-of: workload-identity-webhook
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "wiw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wiw.name" . }}
app.kubernetes.io/component: webhook
{{- end -}}

{{/* metadata.labels and metadata.annotations of every object. */}}
{{- define "wiw.metadata" -}}
labels:
  {{- include "wiw.labels" . | nindent 2 }}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "wiw.selfManaged" -}}
{{- if eq .Values.certificate.mode "self-managed" }}true{{ end -}}
{{- end -}}

{{- define "wiw.validate" -}}
{{- if not (has .Values.installMode (list "cluster-wide" "namespace-opt-in")) }}
{{- fail (printf "installMode must be cluster-wide or namespace-opt-in, not %q" .Values.installMode) }}
{{- end }}
{{- if not (has .Values.certificate.mode (list "self-managed" "cert-manager" "existing-secret")) }}
{{- fail (printf "certificate.mode must be self-managed, cert-manager or existing-secret, not %q" .Values.certificate.mode) }}
{{- end }}
{{- if and .Values.certificate.caBundle (ne .Values.certificate.mode "existing-secret") }}
{{- fail "certificate.caBundle is only used with certificate.mode existing-secret" }}
{{- end }}
{{- end -}}
