{{/* Chart name. */}}
{{- define "gebeta-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name when it already contains the chart name. */}}
{{- define "gebeta-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gebeta-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gebeta-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gebeta-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gebeta-operator.labels" -}}
helm.sh/chart: {{ include "gebeta-operator.chart" . }}
{{ include "gebeta-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: gebeta-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gebeta-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gebeta-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gebeta-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "gebeta-operator.leaseName" -}}
{{- default (include "gebeta-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "gebeta-operator.userTokenNamespace" -}}
{{- default .Release.Namespace .Values.gebeta.userTokenSecret.namespace }}
{{- end }}

{{/*
The rules of the controllers, exactly the verbs they use: the same in the ClusterRole and in
each per-namespace Role. tests/chart.rs derives them from the API server's audit log of the
operator at work and fails on a grant it never used or a request it was refused.
*/}}
{{- define "gebeta-operator.workloadRules" -}}
# Watched (list + watch); never read one by one or replaced.
- apiGroups: ["gebeta.app"]
  resources: ["gebetaserviceaccounts", "gebetaaccesstokens"]
  verbs: ["list", "watch"]
# The upstream-account finalizer (JSON patch of metadata.finalizers).
- apiGroups: ["gebeta.app"]
  resources: ["gebetaserviceaccounts"]
  verbs: ["patch"]
# Status: server-side apply.
- apiGroups: ["gebeta.app"]
  resources: ["gebetaserviceaccounts/status", "gebetaaccesstokens/status"]
  verbs: ["patch"]
# The access-token Secrets' owner reference blocks owner deletion, which clusters with the
# OwnerReferencesPermissionEnforcement admission plugin allow only with this.
- apiGroups: ["gebeta.app"]
  resources: ["gebetaaccesstokens/finalizers"]
  verbs: ["update"]
# Owned Secrets are server-side applied (create: an apply that creates one); never deleted
# (garbage-collected with their owner).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Rollout restarts: read the opt-in annotation, then patch the pod template.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
# Events (patch: a repeated event becomes a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
