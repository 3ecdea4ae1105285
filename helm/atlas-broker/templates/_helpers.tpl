{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "atlas-broker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, suffixed with the chart name unless it already contains it.
*/}}
{{- define "atlas-broker.fullname" -}}
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

{{- define "atlas-broker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release (a Deployment's selector is immutable).
*/}}
{{- define "atlas-broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "atlas-broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "atlas-broker.labels" -}}
helm.sh/chart: {{ include "atlas-broker.chart" . }}
{{ include "atlas-broker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: token-broker
app.kubernetes.io/part-of: atlas
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "atlas-broker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "atlas-broker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "atlas-broker.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the ConfigMap holding the caller policy: the operator's, or the one this chart renders.
*/}}
{{- define "atlas-broker.policyConfigMapName" -}}
{{- default (printf "%s-policy" (include "atlas-broker.fullname" .)) .Values.policy.existingConfigMap }}
{{- end }}

{{- define "atlas-broker.configMapName" -}}
{{- printf "%s-config" (include "atlas-broker.fullname" .) }}
{{- end }}

{{/*
Replicas that run in steady state: the HPA's floor when it owns the count.
*/}}
{{- define "atlas-broker.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.minReplicas }}
{{- else }}
{{- .Values.replicaCount }}
{{- end }}
{{- end }}

{{/*
The settings file rendered from .Values.broker.config (empty when there is none).
*/}}
{{- define "atlas-broker.configFile" -}}
{{- with .Values.broker.config }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
Refuse value combinations that would deploy a broker that cannot work.
*/}}
{{- define "atlas-broker.validate" -}}
{{- $auth := .Values.vault.auth }}
{{- if and (eq $auth.method "approle") (not $auth.approle.existingSecret) }}
{{- fail "vault.auth.method=approle needs vault.auth.approle.existingSecret (a Secret with the role_id and secret_id)" }}
{{- end }}
{{- if and (eq $auth.method "token") (not $auth.token.existingSecret) }}
{{- fail "vault.auth.method=token needs vault.auth.token.existingSecret (a Secret with the Vault token)" }}
{{- end }}
{{- if and (eq $auth.method "kubernetes") (not $auth.kubernetes.role) }}
{{- fail "vault.auth.method=kubernetes needs vault.auth.kubernetes.role (the Vault role bound to the ServiceAccount)" }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds) }}
{{- fail "terminationGracePeriodSeconds must be larger than preStopSleepSeconds, or the broker is killed before it can stop cleanly" }}
{{- end }}
{{- if and (hasPrefix "memory://" .Values.redis.url) (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) }}
{{- fail "redis.url memory:// keeps tokens inside one process: use it only with replicaCount 1 and autoscaling.enabled false" }}
{{- end }}
{{- end }}
