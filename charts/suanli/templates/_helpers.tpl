{{- /* Names, labels and the webhook certificate shared by the templates. */ -}}

{{- define "suanli.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* <release>-<chart name>, unless the release name already contains the chart name. */ -}}
{{- define "suanli.fullname" -}}
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

{{- /* A name derived from the full name: "<fullname>-<suffix>", within 63 characters. */ -}}
{{- define "suanli.componentName" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- printf "%s-%s" (include "suanli.fullname" $root | trunc (int (sub 62 (len $suffix)))) $suffix | trimSuffix "-" -}}
{{- end -}}

{{- /* Labels that select the operator pod: stable across upgrades, so never the version. */ -}}
{{- define "suanli.selectorLabels" -}}
app.kubernetes.io/name: {{ include "suanli.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- /* Labels for every object; callers add a component label where it says more. */ -}}
{{- define "suanli.labels" -}}
app.kubernetes.io/name: {{ include "suanli.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: suanli
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "suanli.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "suanli.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "suanli.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "suanli.webhook.serviceName" -}}
{{- include "suanli.componentName" (list . "webhook") -}}
{{- end -}}

{{- define "suanli.webhook.configurationName" -}}
{{- include "suanli.componentName" (list . "admission") -}}
{{- end -}}

{{- /* The Secret with tls.crt, tls.key and ca.crt, mounted by the operator. Each certificate
source writes its own, so switching sources never has Helm delete cert-manager's Secret. */ -}}
{{- define "suanli.webhook.secretName" -}}
{{- if eq .Values.webhook.certificate.source "cert-manager" -}}
{{- include "suanli.componentName" (list . "webhook-cert") -}}
{{- else -}}
{{- include "suanli.componentName" (list . "webhook-tls") -}}
{{- end -}}
{{- end -}}

{{- define "suanli.webhook.certificateName" -}}
{{- include "suanli.componentName" (list . "webhook") -}}
{{- end -}}

{{- /* The names the certificate must carry, as JSON {"dns": [...], "ips": [...]}: the Service's
names, the extra ones from values, and the host of webhook.url. */ -}}
{{- define "suanli.webhook.altNames" -}}
{{- $service := include "suanli.webhook.serviceName" . -}}
{{- $namespace := .Release.Namespace -}}
{{- $dns := list $service (printf "%s.%s" $service $namespace) (printf "%s.%s.svc" $service $namespace) (printf "%s.%s.svc.%s" $service $namespace .Values.webhook.clusterDomain) -}}
{{- $ips := list -}}
{{- range .Values.webhook.certificate.extraDNSNames -}}
{{- $dns = append $dns . -}}
{{- end -}}
{{- range .Values.webhook.certificate.extraIPs -}}
{{- $ips = append $ips . -}}
{{- end -}}
{{- with .Values.webhook.url -}}
{{- $host := (urlParse .).hostname -}}
{{- if not $host -}}
{{- fail (printf "webhook.url: %q has no host; give an https URL such as https://127.0.0.1:9443" .) -}}
{{- end -}}
{{- if or (regexMatch "^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$" $host) (contains ":" $host) -}}
{{- $ips = append $ips $host -}}
{{- else -}}
{{- $dns = append $dns $host -}}
{{- end -}}
{{- end -}}
{{- dict "dns" ($dns | uniq) "ips" ($ips | uniq) | toJson -}}
{{- end -}}

{{- /*
The chart-made webhook certificate, computed once per render and shared by the Secret, the
webhook configuration (its CA) and the Deployment (a checksum that restarts the operator when the
certificate changes). An existing Secret is reused while it was made for the same names, so an
upgrade keeps the certificate the API server already trusts; a change of names (or a deleted
Secret) makes a new CA and certificate. `helm template` cannot look up, so it always makes one.
Sets $.suanliWebhookTLS to {ca, cert, key, altNamesDigest} (PEM text).
*/ -}}
{{- define "suanli.webhook.tls" -}}
{{- if not (hasKey . "suanliWebhookTLS") -}}
{{- $altNames := include "suanli.webhook.altNames" . | fromJson -}}
{{- $digest := include "suanli.webhook.altNames" . | sha256sum | trunc 16 -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "suanli.webhook.secretName" .) -}}
{{- $data := dict -}}
{{- $annotations := dict -}}
{{- if $secret -}}
{{- $data = $secret.data | default dict -}}
{{- $annotations = $secret.metadata.annotations | default dict -}}
{{- end -}}
{{- if and (eq (index $annotations "suanli.io/alt-names-digest" | default "") $digest) (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") -}}
{{- $_ := set . "suanliWebhookTLS" (dict "ca" (index $data "ca.crt" | b64dec) "cert" (index $data "tls.crt" | b64dec) "key" (index $data "tls.key" | b64dec) "altNamesDigest" $digest) -}}
{{- else -}}
{{- $days := int .Values.webhook.certificate.validityDays -}}
{{- $ca := genCA (printf "%s-webhook-ca" (include "suanli.fullname" .)) $days -}}
{{- $commonName := printf "%s.%s.svc" (include "suanli.webhook.serviceName" .) .Release.Namespace -}}
{{- $cert := genSignedCert $commonName $altNames.ips $altNames.dns $days $ca -}}
{{- $_ := set . "suanliWebhookTLS" (dict "ca" $ca.Cert "cert" $cert.Cert "key" $cert.Key "altNamesDigest" $digest) -}}
{{- end -}}
{{- end -}}
{{- end -}}
