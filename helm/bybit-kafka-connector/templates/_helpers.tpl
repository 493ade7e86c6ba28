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

{{/*
The connector's config.yaml: .Values.config with the chart's secrets wired in.
Where the chart sets a secret's environment variable (bybit.apiKey/apiSecret or
bybit.existingSecret, kafkaAuth, schemaRegistryAuth) and the config does not
say where that secret comes from, the config reads it from the variable
(`${BYBIT_API_KEY}` ...), so the pod validates and starts without repeating
it. A subscription to a private stream (any stream whose name ends in
"private") without credentials fails the install with the fix.
*/}}
{{- define "bkc.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $bybit := default dict $config.bybit -}}
{{- if and (include "bkc.hasCredentials" .) (not $bybit.credentials) -}}
{{- $_ := set $bybit "credentials" (dict "api_key" "${BYBIT_API_KEY}" "api_secret" "${BYBIT_API_SECRET}") -}}
{{- $_ := set $config "bybit" $bybit -}}
{{- end -}}
{{- range $i, $sub := $config.subscriptions -}}
{{- if and (hasSuffix "private" (toString $sub.stream)) (not $bybit.credentials) -}}
{{- fail (printf "config.subscriptions[%d] subscribes the %s stream, which needs Bybit credentials: set bybit.apiKey and bybit.apiSecret, or bybit.existingSecret" $i $sub.stream) -}}
{{- end -}}
{{- end -}}
{{- $kafka := default dict $config.kafka -}}
{{- $security := default dict $kafka.security -}}
{{- if and .Values.kafkaAuth.existingSecret $security.sasl_mechanism (not $security.sasl_plain_password) (not $security.sasl_plain_password_file) -}}
{{- $_ := set $security "sasl_plain_password" "${KAFKA_SASL_PASSWORD}" -}}
{{- end -}}
{{- if and .Values.kafkaAuth.caSecret (not $security.ssl_cafile) -}}
{{- $_ := set $security "ssl_cafile" (printf "/etc/kafka-ca/%s" .Values.kafkaAuth.caKey) -}}
{{- end -}}
{{- $serialization := default dict $config.serialization -}}
{{- $registry := default dict $serialization.schema_registry -}}
{{- if and .Values.schemaRegistryAuth.existingSecret $registry.username (not $registry.password) (not $registry.password_file) -}}
{{- $_ := set $registry "password" "${SCHEMA_REGISTRY_PASSWORD}" -}}
{{- end -}}
{{- if and (include "bkc.coordinated" .) (not $config.coordination) -}}
{{- $_ := set $config "coordination" (dict "group" (default (include "bkc.fullname" .) .Values.coordination.group) "shards" (int .Values.coordination.shards)) -}}
{{- if gt (int .Values.coordination.standby) 0 -}}
{{- $_ := set $config.coordination "standby" (int .Values.coordination.standby) -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
