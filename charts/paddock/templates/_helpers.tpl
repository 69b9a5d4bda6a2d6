{{/* The chart name, for labels. */}}
{{- define "paddock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object's name: the release name, with the chart name unless it is in it. */}}
{{- define "paddock.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "paddock.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: paddock
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "paddock.selectorLabels" . }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select a component's pods; they never change across upgrades. */}}
{{- define "paddock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paddock.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference from {repository, tag, digest}; call with (dict "image" ... "ctx" $). */}}
{{- define "paddock.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "paddock.operator.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "paddock.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "paddock.gateway.serviceAccountName" -}}
{{- default (printf "%s-gateway" (include "paddock.fullname" .)) .Values.gateway.serviceAccount.name -}}
{{- end -}}

{{/* The Redis URL every component uses, harness pods in other namespaces included. */}}
{{- define "paddock.redisUrl" -}}
{{- if .Values.redis.external.url -}}
{{- .Values.redis.external.url -}}
{{- else -}}
{{- printf "redis://%s-redis.%s.svc.%s:6379/0" (include "paddock.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}
{{- end -}}

{{/* The TCP port of an external Redis URL (6379 when it names none). */}}
{{- define "paddock.externalRedisPort" -}}
{{- $host := (urlParse .Values.redis.external.url).host -}}
{{- $port := regexFind ":[0-9]+$" $host | trimPrefix ":" -}}
{{- default "6379" $port -}}
{{- end -}}

{{/* The restricted Pod Security profile for a container. */}}
{{- define "paddock.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The restricted Pod Security profile for a pod; call with the uid. */}}
{{- define "paddock.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Spread replicas over nodes unless the user gave an affinity; call with (dict "ctx" $ "component" "operator" "affinity" ...). */}}
{{- define "paddock.affinity" -}}
{{- if .affinity -}}
{{ toYaml .affinity }}
{{- else -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "paddock.selectorLabels" . | nindent 12 }}
{{- end -}}
{{- end -}}

{{/* Egress to DNS: any resolver on port 53 (cluster DNS, NodeLocal DNSCache). */}}
{{- define "paddock.dnsEgress" -}}
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

{{/* Egress to the Kubernetes API. */}}
{{- define "paddock.apiServerEgress" -}}
- to:
    {{- range .Values.networkPolicy.apiServer.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .Values.networkPolicy.apiServer.ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end -}}

{{/* Egress to Redis: the bundled pods, or the external URL's port. */}}
{{- define "paddock.redisEgress" -}}
{{- if .Values.redis.external.url -}}
- ports:
    - {protocol: TCP, port: {{ include "paddock.externalRedisPort" . }}}
{{- else -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "paddock.selectorLabels" (dict "ctx" . "component" "redis") | nindent 10 }}
  ports:
    - {protocol: TCP, port: 6379}
{{- end }}
{{- end -}}

{{/* Ingress to the metrics port. */}}
{{- define "paddock.metricsIngress" -}}
- ports:
    - {protocol: TCP, port: 9090}
  {{- with .Values.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* The Redis users' passwords, generated once and kept across upgrades (lookup). */}}
{{- define "paddock.redisPasswords" -}}
{{- $name := printf "%s-redis-auth" (include "paddock.fullname" .) -}}
{{- $found := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- $data := (and $found $found.data) | default dict -}}
{{- $out := dict -}}
{{- range $key := list "operator-password" "gateway-password" "default-password" -}}
{{- if hasKey $data $key -}}
{{- $_ := set $out $key (index $data $key | b64dec) -}}
{{- else -}}
{{- $_ := set $out $key (randAlphaNum 40) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The ACL file of the bundled Redis (paddock.eventlog.acl.acl_file: same lines). The
default user keeps every permission behind a password no one is given: Redis replays the
AOF as that user, and a restricted one silently drops MULTI/EXEC blocks (redis#14541). */}}
{{- define "paddock.redisAcl" -}}
{{- $pw := . -}}
{{- $commands := "+auth +hello +ping +eval +evalsha +script|load +script|exists +multi +exec +discard +time +exists +del +get +set +incr +pexpire +pttl +hget +hset +hdel +hexists +hincrby +hgetall +xadd +xrange +xrevrange +xread +xreadgroup +xack +xdel +xlen +xclaim +xautoclaim +xpending +xgroup|create +subscribe +unsubscribe +publish" -}}
user default on #{{ index $pw "default-password" | sha256sum }} ~* &* +@all
user paddock-operator on #{{ index $pw "operator-password" | sha256sum }} ~* &* +@all
user paddock-gateway on #{{ index $pw "gateway-password" | sha256sum }} resetkeys ~paddock:t:* resetchannels &paddock:t:* -@all {{ $commands }}
{{ end -}}

{{/* Redis settings of the operator and the gateway: URL, user, password, CA. */}}
{{- define "paddock.redisEnv" -}}
- name: PADDOCK_REDIS_URL
  value: {{ include "paddock.redisUrl" .ctx | quote }}
- name: PADDOCK_REDIS_USERNAME
  value: paddock-{{ .user }}
- name: PADDOCK_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "paddock.fullname" .ctx }}-redis-auth
      key: {{ .user }}-password
{{- if .ctx.Values.redis.external.caSecret }}
- name: PADDOCK_REDIS_CA_FILE
  value: /etc/paddock/redis-ca/ca.crt
{{- end }}
{{- end -}}

{{/* The CA bundle of an external rediss:// Redis, for the operator and the gateway. */}}
{{- define "paddock.redisCaMount" -}}
{{- if .Values.redis.external.caSecret }}
- name: redis-ca
  mountPath: /etc/paddock/redis-ca
  readOnly: true
{{- end }}
{{- end -}}
{{- define "paddock.redisCaVolume" -}}
{{- with .Values.redis.external.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ . }}
    items: [{key: ca.crt, path: ca.crt}]
{{- end }}
{{- end -}}

{{/* The bundled Redis's configuration. */}}
{{- define "paddock.redisConf" -}}
bind * -::*
protected-mode no
port 6379
dir /data
# Users (and their password digests) are in a Secret; the operator adds tenants' users.
aclfile /etc/redis-acl/users.acl
# The event logs are the only durable state: every write reaches the disk before it is
# acknowledged, and nothing is ever evicted.
appendonly yes
appendfsync always
save ""
maxmemory-policy noeviction
{{- with .Values.redis.maxmemory }}
maxmemory {{ . }}
{{- end }}
{{- end -}}
