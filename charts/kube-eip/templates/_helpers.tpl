{{/* Labels of every object: kustomize's part-of (config/default, config/agent) and Helm's. */}}
{{- define "kube-eip.labels" -}}
app.kubernetes.io/part-of: kube-eip
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* An image reference: (dict "image" .Values.images.agent "root" $). */}}
{{- define "kube-eip.image" -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end }}

{{/*
The data of eip-agent-cm: agent.config with its keys in snake_case, lists joined by
commas, plus the TLS keys: this node's files in /etc/kube-eip/pki and the allow-lists, or,
without TLS, all empty and insecure "true" (config/plaintext-agent).
*/}}
{{- define "kube-eip.agentConfig" -}}
{{- $data := dict }}
{{- range $key, $value := .Values.agent.config }}
{{- if kindIs "slice" $value }}{{ $value = join "," $value }}{{ end }}
{{- if kindIs "invalid" $value }}{{ $value = "" }}{{ end }}
{{- $_ := set $data (snakecase $key) (toString $value) }}
{{- end }}
{{- $tls := .Values.tls.enabled }}
{{- $_ := set $data "tls_cert" (ternary "/etc/kube-eip/pki/agent.crt" "" $tls) }}
{{- $_ := set $data "tls_key" (ternary "/etc/kube-eip/pki/agent.key" "" $tls) }}
{{- $_ := set $data "tls_client_ca" (ternary "/etc/kube-eip/pki/client-ca.crt" "" $tls) }}
{{- $_ := set $data "tls_allowed_clients" (ternary (join "," .Values.tls.allowedClients) "" $tls) }}
{{- $_ := set $data "tls_allowed_readers" (ternary (join "," .Values.tls.allowedReaders) "" $tls) }}
{{- $_ := set $data "insecure" (ternary "false" "true" $tls) }}
{{- toYaml $data }}
{{- end }}
