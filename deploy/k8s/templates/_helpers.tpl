{{/*
Names and labels.
*/}}
{{- define "mih.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; each object adds "-<service>", so it stays short enough for that. */}}
{{- define "mih.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mih.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The five services, in pipeline order. */}}
{{- define "mih.services" -}}
{{- list "ingest" "matcher" "dispatcher" "dlq" "api" | toJson -}}
{{- end -}}

{{- define "mih.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mih.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object; `component` is a service name, "migrate" or "shared". */}}
{{- define "mih.labels" -}}
helm.sh/chart: {{ include "mih.chart" .root }}
{{ include "mih.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: mih
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "mih.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mih.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mih.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret the MIH_* variables come from. */}}
{{- define "mih.secretName" -}}
{{- default (include "mih.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/*
The Secret's data: MIH_* variable → value, only the values given. With existingSecret the chart
renders no Secret: the URLs (whose defaults name the companion services) are then ignored, and
any other secret value given inline is an error (two sources of one setting would be a trap).
*/}}
{{- define "mih.secretEnv" -}}
{{- $v := .Values -}}
{{- $secret := dict -}}
{{- $_ := set $secret "MIH_NATS_USER" $v.nats.user -}}
{{- $_ := set $secret "MIH_NATS_PASSWORD" $v.nats.password -}}
{{- $_ := set $secret "MIH_NATS_TOKEN" $v.nats.token -}}
{{- $_ := set $secret "MIH_SECRET_KEY" $v.secretKey -}}
{{- $_ := set $secret "MIH_BOOTSTRAP_ADMIN_TOKEN" $v.bootstrapAdminToken -}}
{{- if $v.secretKeysPrevious -}}
{{- $_ := set $secret "MIH_SECRET_KEYS_PREVIOUS" (toJson $v.secretKeysPrevious) -}}
{{- end -}}
{{- range $k, $val := $v.extraSecretEnv -}}
{{- if or (hasKey $secret $k) (has $k (list "MIH_NATS_URL" "MIH_DATABASE_URL" "MIH_CONFIG" "MIH_SERVICES")) -}}
{{- fail (printf "extraSecretEnv.%s: the chart sets this variable from its own value" $k) -}}
{{- end -}}
{{- $_ := set $secret $k (toString $val) -}}
{{- end -}}
{{- $given := dict -}}
{{- range $k, $val := $secret -}}
{{- if $val -}}{{- $_ := set $given $k $val -}}{{- end -}}
{{- end -}}
{{- if $v.existingSecret -}}
{{- if $given -}}
{{- fail (printf "existingSecret %q is set: leave nats.user/password/token, secretKey, secretKeysPrevious, bootstrapAdminToken and extraSecretEnv empty and put them in that Secret (given: %s)" $v.existingSecret (keys $given | sortAlpha | join ", ")) -}}
{{- end -}}
{{- else -}}
{{- if not $v.nats.url -}}
{{- fail "nats.url is empty: give the NATS server(s), nats://host:4222, or set existingSecret" -}}
{{- end -}}
{{- if not $v.database.url -}}
{{- fail "database.url is empty: give postgres://user:password@host:5432/mih, or set existingSecret" -}}
{{- end -}}
{{- $_ := set $given "MIH_NATS_URL" $v.nats.url -}}
{{- $_ := set $given "MIH_DATABASE_URL" $v.database.url -}}
{{- end -}}
{{- toJson $given -}}
{{- end -}}

{{/* Where the NATS credentials and TLS files are mounted. */}}
{{- define "mih.natsCredsDir" -}}/etc/mih/nats-creds{{- end -}}
{{- define "mih.natsTlsDir" -}}/etc/mih/nats-tls{{- end -}}

{{/*
The mih configuration as a dict: the user's `config`, with what the chart decides set over it.
Settings the chart owns, and secrets, are refused in `config` instead of silently overridden.
*/}}
{{- define "mih.configDict" -}}
{{- $v := .Values -}}
{{- $user := deepCopy ($v.config | default dict) -}}
{{- $refused := list
  (list "namespace" "hubNamespace")
  (list "secret_key" "secretKey (the Secret)")
  (list "secret_keys_previous" "secretKeysPrevious (the Secret)")
  (list "bootstrap_admin_token" "bootstrapAdminToken (the Secret)")
  (list "nats.url" "nats.url (the Secret)")
  (list "nats.user" "nats.user (the Secret)")
  (list "nats.password" "nats.password (the Secret)")
  (list "nats.token" "nats.token (the Secret)")
  (list "nats.creds_file" "nats.credentials")
  (list "nats.tls_ca_file" "nats.tls")
  (list "nats.tls_cert_file" "nats.tls")
  (list "nats.tls_key_file" "nats.tls")
  (list "nats.require_tls" "nats.tls.required")
  (list "nats.replicas" "nats.streamReplicas")
  (list "database.url" "database.url (the Secret)")
  (list "database.max_connections" "database.maxConnections")
  (list "streams.replicas" "nats.streamReplicas")
  (list "shutdown.drain_timeout" "shutdown.drainTimeoutSeconds")
  (list "ingest.listen" "ingest.port")
  (list "matcher.listen" "matcher.port")
  (list "dispatcher.listen" "dispatcher.port")
  (list "dlq.listen" "dlq.port")
  (list "api.listen" "api.port")
-}}
{{- range $r := $refused -}}
{{- $path := splitList "." (first $r) -}}
{{- $node := $user -}}
{{- range $i, $key := $path -}}
{{- if kindIs "map" $node -}}
{{- if hasKey $node $key -}}
{{- if eq (add1 $i) (len $path) -}}
{{- fail (printf "config.%s is set by the chart: use %s instead" (first $r) (last $r)) -}}
{{- end -}}
{{- $node = index $node $key -}}
{{- else -}}
{{- $node = "" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $id, $source := ($user.sources | default dict) -}}
{{- range $key := list "signing_secrets" "bearer_tokens" -}}
{{- if and (kindIs "map" $source) (hasKey $source $key) -}}
{{- fail (printf "config.sources.%s.%s is a secret: put it in the Secret as MIH_SOURCES__%s__%s (extraSecretEnv or existingSecret)" $id $key (upper $id) (upper $key)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $nats := dict "require_tls" $v.nats.tls.required -}}
{{- if $v.nats.credentials.secretName -}}
{{- $_ := set $nats "creds_file" (printf "%s/%s" (include "mih.natsCredsDir" .) $v.nats.credentials.key) -}}
{{- end -}}
{{- if $v.nats.tls.secretName -}}
{{- $_ := set $nats "tls_ca_file" (printf "%s/%s" (include "mih.natsTlsDir" .) $v.nats.tls.caKey) -}}
{{- if or $v.nats.tls.certKey $v.nats.tls.keyKey -}}
{{- if not (and $v.nats.tls.certKey $v.nats.tls.keyKey) -}}
{{- fail "nats.tls.certKey and nats.tls.keyKey go together (mutual TLS needs both)" -}}
{{- end -}}
{{- $_ := set $nats "tls_cert_file" (printf "%s/%s" (include "mih.natsTlsDir" .) $v.nats.tls.certKey) -}}
{{- $_ := set $nats "tls_key_file" (printf "%s/%s" (include "mih.natsTlsDir" .) $v.nats.tls.keyKey) -}}
{{- end -}}
{{- else if or $v.nats.tls.certKey $v.nats.tls.keyKey -}}
{{- fail "nats.tls.certKey/keyKey need nats.tls.secretName" -}}
{{- end -}}
{{- $chart := dict
  "namespace" $v.hubNamespace
  "nats" $nats
  "database" (dict "max_connections" (int64 $v.database.maxConnections))
  "streams" (dict "replicas" (int64 $v.nats.streamReplicas))
  "shutdown" (dict "drain_timeout" (printf "%ds" (int64 $v.shutdown.drainTimeoutSeconds)))
-}}
{{- range $svc := include "mih.services" . | fromJsonArray -}}
{{- $_ := set $chart $svc (dict "listen" (printf "%s:%d" (include "mih.listenHost" $) (int64 (index $v $svc).port))) -}}
{{- end -}}
{{- toJson (mustMergeOverwrite $user $chart) -}}
{{- end -}}

{{/* An IPv6 host is bracketed in a socket address. */}}
{{- define "mih.listenHost" -}}
{{- if contains ":" .Values.listenHost -}}[{{ .Values.listenHost }}]{{- else -}}{{ .Values.listenHost }}{{- end -}}
{{- end -}}

{{/*
TOML rendering. Helm's toToml writes every YAML number as a float (1000 → 1000.0), which mih
refuses for its integer settings, so the chart renders TOML itself: integral numbers as
integers, strings JSON-quoted (a subset of TOML basic strings), lists inline, maps as tables.
*/}}
{{- define "mih.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "mih.tomlValue" -}}
{{- $v := .value -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) -}}
{{- printf "%d" $v -}}
{{- else if kindIs "float64" $v -}}
{{- if eq (floor $v) $v -}}{{- printf "%d" (int64 $v) -}}{{- else -}}{{- printf "%v" $v -}}{{- end -}}
{{- else if kindIs "slice" $v -}}
{{- $items := list -}}
{{- range $i, $item := $v -}}
{{- $items = append $items (include "mih.tomlValue" (dict "value" $item "path" (printf "%s[%d]" $.path $i))) -}}
{{- end -}}
[{{ join ", " $items }}]
{{- else if kindIs "map" $v -}}
{{- $items := list -}}
{{- range $k := keys $v | sortAlpha -}}
{{- $items = append $items (printf "%s = %s" (include "mih.tomlKey" $k) (include "mih.tomlValue" (dict "value" (index $v $k) "path" (printf "%s.%s" $.path $k)))) -}}
{{- end -}}
{ {{- join ", " $items -}} }
{{- else -}}
{{- fail (printf "config: %s has no value (null); remove it or give one" .path) -}}
{{- end -}}
{{- end -}}

{{/* A table: its plain keys first, then each sub-table under its [dotted.header]. */}}
{{- define "mih.tomlTable" -}}
{{- $t := .table -}}
{{- range $k := keys $t | sortAlpha -}}
{{- $val := index $t $k -}}
{{- if not (kindIs "map" $val) }}
{{ include "mih.tomlKey" $k }} = {{ include "mih.tomlValue" (dict "value" $val "path" (append $.path $k | join ".")) }}
{{- end -}}
{{- end -}}
{{- range $k := keys $t | sortAlpha -}}
{{- $val := index $t $k -}}
{{- if kindIs "map" $val -}}
{{- $path := append $.path $k -}}
{{- $header := list -}}
{{- range $p := $path -}}{{- $header = append $header (include "mih.tomlKey" $p) -}}{{- end }}

[{{ join "." $header }}]
{{- include "mih.tomlTable" (dict "table" $val "path" $path) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The config file: what mih reads with --config. */}}
{{- define "mih.configToml" -}}
# Rendered by the mih Helm chart from its values (`config` and the chart's own settings).
# Secrets are not here: they come from the Secret as MIH_* variables.
{{- include "mih.tomlTable" (dict "table" (include "mih.configDict" . | fromJson) "path" list) }}
{{ end -}}

{{/* terminationGracePeriodSeconds: the preStop wait, the drain, and 10 s for the process to exit. */}}
{{- define "mih.gracePeriod" -}}
{{- add (int64 .Values.shutdown.preStopSleepSeconds) (int64 .Values.shutdown.drainTimeoutSeconds) 10 -}}
{{- end -}}

{{/* Container security context: nothing but the binary, as the image's numeric user. */}}
{{- define "mih.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mih.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Environment of every mih container. */}}
{{- define "mih.env" -}}
{{- range .Values.extraEnv -}}
{{- if has .name (list "MIH_CONFIG" "MIH_SERVICES") -}}
{{- fail (printf "extraEnv: %s is set by the chart (the config file, the service of each Deployment)" .name) -}}
{{- end -}}
{{- end -}}
- name: MIH_CONFIG
  value: /etc/mih/config/mih.toml
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes and mounts of every mih container; `configMap` names the ConfigMap to mount. */}}
{{- define "mih.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap }}
- name: tmp
  # mih writes no files; an empty /tmp keeps libraries that expect one working on a read-only
  # root filesystem.
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- with .root.Values.nats.credentials.secretName }}
- name: nats-creds
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- with .root.Values.nats.tls.secretName }}
- name: nats-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "mih.volumeMounts" -}}
- name: config
  mountPath: /etc/mih/config
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.nats.credentials.secretName }}
- name: nats-creds
  mountPath: {{ include "mih.natsCredsDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.nats.tls.secretName }}
- name: nats-tls
  mountPath: {{ include "mih.natsTlsDir" . }}
  readOnly: true
{{- end }}
{{- end -}}
