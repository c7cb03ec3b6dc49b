{{/* The release's full name: the chart's name unless the release is named otherwise. */}}
{{- define "alo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "alo.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "alo.labels" -}}
{{ include "alo.selectorLabels" . }}
app.kubernetes.io/part-of: {{ .Chart.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "alo.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "alo.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "alo.fullname" .) -}}
{{- end -}}

{{/* Values that cannot work together stop the render with one line saying why. */}}
{{- define "alo.validate" -}}
{{- if and (not .Values.leaderElection.enabled) (gt (int .Values.replicaCount) 1) -}}
{{- fail "leaderElection.enabled=false needs replicaCount 1: replicas without a Lease would all act" -}}
{{- end -}}
{{- if not (has .Values.valkey.topology (list "standalone" "cluster" "sentinel")) -}}
{{- fail (printf "valkey.topology must be standalone, cluster or sentinel, not %q" .Values.valkey.topology) -}}
{{- end -}}
{{- if and (eq .Values.valkey.topology "sentinel") (or (not .Values.valkey.sentinel.masterName) (not .Values.valkey.sentinel.sentinels)) -}}
{{- fail "valkey.topology=sentinel needs valkey.sentinel.sentinels and valkey.sentinel.masterName" -}}
{{- end -}}
{{- if and (eq .Values.valkey.topology "cluster") (not (regexMatch "\\{[^}]+\\}" .Values.valkey.keyPrefix)) -}}
{{- fail "valkey.topology=cluster needs valkey.keyPrefix with a hash tag, such as \"{orchestrator}:\"" -}}
{{- end -}}
{{- end -}}
