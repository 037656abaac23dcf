{{/* Name of the chart, or nameOverride. */}}
{{- define "kea-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: fullnameOverride, else the release name when it contains the chart name, else both. */}}
{{- define "kea-operator.fullname" -}}
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

{{/* Labels that select the operator's pods; never change them in an upgrade. */}}
{{- define "kea-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kea-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. `cargo xtask generate` drops the two Helm-only ones for deploy/. */}}
{{- define "kea-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kea-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ include "kea-operator.imageTag" . | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: kea
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kea-operator.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The operator's image: repository:tag, and @digest when one is set. */}}
{{- define "kea-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "kea-operator.imageTag" .) }}
{{- with .Values.image.digest }}@{{ . }}{{ end }}
{{- end }}

{{/* A store server's image (dict "root" . "name" "kea-mariadb" "image" VALUE): the value, or
kea's own image of the chart's appVersion in the operator image's registry path. */}}
{{- define "kea-operator.storeImage" -}}
{{- .image | default (printf "%s/%s:%s" (dir .root.Values.image.repository) .name .root.Chart.AppVersion) }}
{{- end }}

{{- define "kea-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kea-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kea-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "kea-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
