{{/*
Helpers, starting from what `helm create` generates (name, fullname, chart, labels, selectorLabels,
serviceAccountName) and adding the component (`producer` or `email`).
Component-scoped helpers take a dict: (dict "root" $ "component" "producer").
*/}}

{{/* The chart name, for the app.kubernetes.io/name label. */}}
{{- define "welcome-mail.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, or else the release name as it is.
Unlike `helm create` it never adds the chart name, so the Deployments are always exactly
<release>-producer and <release>-email (`kubectl scale deployment/<release>-email` works as documented).
Truncated to leave room for the longest suffix ("-producer", 9 characters) within 63.
*/}}
{{- define "welcome-mail.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- end }}

{{/* <fullname>-<component>: the name of the component's Deployment, Service, ConfigMap, ... */}}
{{- define "welcome-mail.componentName" -}}
{{- printf "%s-%s" (include "welcome-mail.fullname" .root) .component }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "welcome-mail.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of objects that belong to the whole release. */}}
{{- define "welcome-mail.labels" -}}
helm.sh/chart: {{ include "welcome-mail.chart" . }}
app.kubernetes.io/name: {{ include "welcome-mail.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: welcome-mail
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of a component's objects. */}}
{{- define "welcome-mail.componentLabels" -}}
{{ include "welcome-mail.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels of a component (immutable once installed: do not change). */}}
{{- define "welcome-mail.selectorLabels" -}}
app.kubernetes.io/name: {{ include "welcome-mail.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
metadata.annotations from commonAnnotations plus the given extra map (.extra), or nothing at all.
Emits its own leading newline and indentation (metadata level): use as `{{- include ... }}`.
*/}}
{{- define "welcome-mail.annotations" -}}
{{- $all := merge (dict) (.extra | default (dict)) (.root.Values.commonAnnotations | default (dict)) }}
{{- with $all }}
{{- printf "\n  annotations:\n%s" (toYaml . | indent 4) }}
{{- end }}
{{- end }}

{{/* The ServiceAccount a component's pods run as. */}}
{{- define "welcome-mail.serviceAccountName" -}}
{{- $sa := (index .root.Values .component).serviceAccount }}
{{- if $sa.create }}
{{- default (include "welcome-mail.componentName" .) $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/* The image reference of a component: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "welcome-mail.image" -}}
{{- $image := (index .root.Values .component).image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag | toString) }}
{{- end }}
{{- end }}

{{/* The Secret holding AMQP_URL, SMTP_USERNAME, SMTP_PASSWORD and DEDUP_URL. */}}
{{- define "welcome-mail.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-secrets" (include "welcome-mail.fullname" .) }}
{{- end }}
{{- end }}

{{/* True ("true") when the consumer's replica count is owned by an autoscaler. */}}
{{- define "welcome-mail.email.autoscaled" -}}
{{- if or .Values.email.autoscaling.hpa.enabled .Values.email.autoscaling.keda.enabled }}true{{ end }}
{{- end }}

{{/* The SMTP port the consumer uses: the configured one, or the default of the security mode. */}}
{{- define "welcome-mail.email.smtpPort" -}}
{{- $smtp := .Values.email.config.smtp }}
{{- if $smtp.port }}
{{- $smtp.port | int }}
{{- else }}
{{- get (dict "none" 25 "starttls" 587 "tls" 465) $smtp.security }}
{{- end }}
{{- end }}

{{/* An env entry taken from the Secret; optional keys may be missing from an existing Secret. */}}
{{- define "welcome-mail.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "welcome-mail.secretName" .root }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/* An HTTP probe on a named port; .probe is the values block (enabled, timings). */}}
{{- define "welcome-mail.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
successThreshold: {{ .probe.successThreshold }}
{{- end }}

{{/* Topology spread: the values' list, or spread over nodes and zones without blocking scheduling. */}}
{{- define "welcome-mail.topologySpreadConstraints" -}}
{{- $values := (index .root.Values .component).topologySpreadConstraints }}
{{- if $values }}
{{- toYaml $values }}
{{- else }}
{{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
- maxSkew: 1
  topologyKey: {{ $key }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "welcome-mail.selectorLabels" $ | nindent 6 }}
  matchLabelKeys:
    - pod-template-hash
{{- end }}
{{- end }}
{{- end }}

{{/*
checksum/config: changes whenever the component's ConfigMap or the chart's Secret changes, so a
`helm upgrade` that only changes configuration still rolls the pods. With an existing Secret only
its name and key names are hashed (rotate it with `kubectl rollout restart`).
*/}}
{{- define "welcome-mail.configChecksum" -}}
{{- $config := include (print .root.Template.BasePath "/" .component "/configmap.yaml") .root }}
{{- $secret := include (print .root.Template.BasePath "/secret.yaml") .root }}
{{- if .root.Values.secrets.existingSecret }}
{{- $secret = toJson .root.Values.secrets }}
{{- end }}
{{- print $config $secret | sha256sum }}
{{- end }}
