{{- /*
The operator's RBAC rules: files/rbac-rules.yaml is `kea-operator rbac --rules`, copied by
`cargo xtask generate`, so the chart grants exactly what the operator's permission table says.
*/}}
{{- define "kea-operator.rbacRules" -}}
{{- .Files.Get "files/rbac-rules.yaml" }}
{{- end }}

{{- define "kea-operator.namespacedRules" -}}
{{ (include "kea-operator.rbacRules" . | fromYaml).namespaced | toYaml }}
{{- end }}

{{- define "kea-operator.clusterScopedRules" -}}
{{ (include "kea-operator.rbacRules" . | fromYaml).clusterScoped | toYaml }}
{{- end }}

{{- define "kea-operator.leaseRoleRules" -}}
{{ (include "kea-operator.rbacRules" . | fromYaml).lease | toYaml }}
{{- end }}
