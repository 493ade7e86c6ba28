{{- define "bkc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bkc.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bkc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bkc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bkc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "bkc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "bkc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bkc.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bkc.credentialsSecret" -}}
{{- default (printf "%s-bybit" (include "bkc.fullname" .)) .Values.bybit.existingSecret -}}
{{- end -}}

{{- define "bkc.hasCredentials" -}}
{{- if or .Values.bybit.existingSecret (and .Values.bybit.apiKey .Values.bybit.apiSecret) -}}true{{- end -}}
{{- end -}}

{{- define "bkc.metricsPort" -}}
{{- (default dict .Values.config.metrics).port | default 9102 -}}
{{- end -}}

{{- define "bkc.coordinated" -}}
{{- if or .Values.coordination.enabled (gt (int .Values.replicaCount) 1) (.Values.config.coordination) -}}true{{- end -}}
{{- end -}}

{{/* The connector config, with coordination added when replicas share the work. */}}
{{- define "bkc.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- if and (include "bkc.coordinated" .) (not $config.coordination) -}}
{{- $_ := set $config "coordination" (dict "group" (default (include "bkc.fullname" .) .Values.coordination.group) "shards" (int .Values.coordination.shards)) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
