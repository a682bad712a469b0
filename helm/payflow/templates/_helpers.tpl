{{/* The chart name (app.kubernetes.io/name). */}}
{{- define "payflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name prefix of the release's objects, truncated to 63 (the DNS label limit).
A release name that already contains the chart name is used as is.
*/}}
{{- define "payflow.fullname" -}}
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

{{/* "<fullname>-<suffix>", truncated to 63. Call with (list $ "suffix"). */}}
{{- define "payflow.componentName" -}}
{{- $fullname := include "payflow.fullname" (index . 0) }}
{{- printf "%s-%s" ($fullname | trunc (int (sub 62 (len (index . 1))))) (index . 1) | trimSuffix "-" }}
{{- end }}

{{- define "payflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The faults ConfigMap: payflow.naming.faults_configmap_name(release). */}}
{{- define "payflow.faultsConfigMap" -}}
{{- printf "%s-faults" .Release.Name }}
{{- end }}

{{- define "payflow.appTag" -}}
{{- .Values.app.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Selector labels: immutable, so name and instance (and a component) only. */}}
{{- define "payflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "payflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The standard labels. */}}
{{- define "payflow.labels" -}}
helm.sh/chart: {{ include "payflow.chart" . }}
{{ include "payflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: payflow
{{- end }}

{{/*
Labels of one component. Call with (dict "ctx" $ "component" "api" [ "version" "x" ]).
*/}}
{{- define "payflow.componentLabels" -}}
helm.sh/chart: {{ include "payflow.chart" .ctx }}
{{ include "payflow.componentSelectorLabels" . }}
app.kubernetes.io/version: {{ .version | default .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: payflow
{{- end }}

{{- define "payflow.componentSelectorLabels" -}}
{{ include "payflow.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The namespaces the operator serves: operator.watchNamespaces, or the release's. */}}
{{- define "payflow.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces }}
{{- .Values.operator.watchNamespaces | uniq | join "," }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/* The Secret and key that hold DATABASE_URL. */}}
{{- define "payflow.databaseSecret" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if .Values.postgresql.enabled }}
{{- include "payflow.componentName" (list . "postgresql") }}
{{- else }}
{{- fail "database: set database.existingSecret (a Secret holding DATABASE_URL) or postgresql.enabled=true" }}
{{- end }}
{{- end }}

{{- define "payflow.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecretKey }}
{{- else }}
{{- print "database-url" }}
{{- end }}
{{- end }}

{{/* The password of the Secret (list ctx name): the one it holds already (an upgrade), else a
new random one (the first install). */}}
{{- define "payflow.keptPassword" -}}
{{- $ctx := index . 0 }}
{{- $existing := lookup "v1" "Secret" $ctx.Release.Namespace (index . 1) }}
{{- if and $existing (hasKey ($existing.data | default dict) "password") }}
{{- index $existing.data "password" | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{/* The app's REDIS_URL: from the chart's Redis Secret (with its password), from an existing
Secret, or a plain externalUrl (one without a password). */}}
{{- define "payflow.redisUrlEnv" -}}
{{- if .Values.redis.enabled }}
valueFrom:
  secretKeyRef:
    name: {{ include "payflow.componentName" (list . "redis") }}
    key: redis-url
{{- else if .Values.redis.existingSecret }}
valueFrom:
  secretKeyRef:
    name: {{ .Values.redis.existingSecret }}
    key: {{ .Values.redis.existingSecretKey }}
{{- else }}
value: {{ required "redis: set redis.existingSecret, redis.externalUrl or redis.enabled=true" .Values.redis.externalUrl | quote }}
{{- end }}
{{- end }}

{{/* The pod security context: the shared one, or one for another uid. */}}
{{- define "payflow.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "payflow.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount of a component that never calls the Kubernetes API (PostgreSQL, Redis, the
load generator): an identity of its own, so that nothing bound to the namespace's `default`
account reaches it, and no token (the pod spec says so too). Call with
(dict "ctx" $ "component" "redis" "name" "<fullname>-redis").
*/}}
{{- define "payflow.tokenlessServiceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .name }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "payflow.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
automountServiceAccountToken: false
{{- end }}
