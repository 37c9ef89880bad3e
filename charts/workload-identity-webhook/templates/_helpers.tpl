{{/* app.kubernetes.io/name: the chart's name, or nameOverride. */}}
{{- define "wiw.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The names of the objects: fullnameOverride, else nameOverride, else the chart's name (not
prefixed with the release: the MutatingWebhookConfiguration and the admission policies are
cluster-scoped, so there is one install per cluster). The webhook's flags, the Role's resourceNames
and the admission policies name them, so an override reaches all of them. */}}
{{- define "wiw.fullname" -}}
{{- .Values.fullnameOverride | default (include "wiw.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The labels of every object and of the Pods (Helm's and Kubernetes' recommended labels), with
commonLabels; the recommended ones win over a commonLabels key of the same name. */}}
{{- define "wiw.labels" -}}
{{- $labels := dict
  "app.kubernetes.io/name" (include "wiw.name" .)
  "app.kubernetes.io/instance" .Release.Name
  "app.kubernetes.io/version" .Chart.AppVersion
  "app.kubernetes.io/component" "webhook"
  "app.kubernetes.io/part-of" "workload-identity-webhook"
  "app.kubernetes.io/managed-by" .Release.Service
  "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-")
-}}
{{- toYaml (merge $labels (.Values.commonLabels | default dict)) -}}
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

{{/* What values.schema.json cannot say: a value that only one mode reads. */}}
{{- define "wiw.validate" -}}
{{- if and .Values.certificate.caBundle (ne .Values.certificate.mode "existing-secret") }}
{{- fail "certificate.caBundle is only used with certificate.mode existing-secret" }}
{{- end }}
{{- end -}}
