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
each per-namespace Role.
*/}}
{{- define "gebeta-operator.workloadRules" -}}
- apiGroups: ["gebeta.app"]
  resources: ["gebetaserviceaccounts", "gebetaaccesstokens"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["gebeta.app"]
  resources: ["gebetaserviceaccounts/status", "gebetaaccesstokens/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["gebeta.app"]
  resources: ["gebetaserviceaccounts/finalizers", "gebetaaccesstokens/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
