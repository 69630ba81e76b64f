{{- /*
One webhook configuration of the operator: its kind, and one webhook per Kopf admission handler
of that kind in operator/suanli/handlers/admission.py (Kopf serves each at /<handler id>;
tests/test_chart.py checks these lists against Kopf's registry). Called with
(dict "root" $ "kind" <kind> "hooks" <list of dict id resource scope operations sideEffects failurePolicy>).
*/ -}}
{{- define "suanli.webhook.configuration" -}}
{{- $root := .root }}
{{- $helmCerts := eq $root.Values.webhook.certificate.source "helm" }}
{{- if $helmCerts }}
{{- include "suanli.webhook.tls" $root }}
{{- end }}
apiVersion: admissionregistration.k8s.io/v1
kind: {{ .kind }}
metadata:
  name: {{ include "suanli.webhook.configurationName" $root }}
  labels:
    {{- include "suanli.labels" $root | nindent 4 }}
    app.kubernetes.io/component: webhook
  {{- if not $helmCerts }}
  annotations:
    # cert-manager's CA injector copies the Certificate's CA into every caBundle below.
    cert-manager.io/inject-ca-from: {{ $root.Release.Namespace }}/{{ include "suanli.webhook.certificateName" $root }}
  {{- end }}
webhooks:
  {{- range $hook := .hooks }}
  - name: {{ $hook.id }}.suanli.io
    admissionReviewVersions: ["v1"]
    sideEffects: {{ $hook.sideEffects }}
    failurePolicy: {{ $hook.failurePolicy }}
    matchPolicy: Equivalent
    timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
    rules:
      - apiGroups: ["suanli.io"]
        apiVersions: ["v1alpha1"]
        resources: [{{ $hook.resource | quote }}]
        operations: {{ toJson $hook.operations }}
        scope: {{ $hook.scope }}
    clientConfig:
      {{- if $root.Values.webhook.url }}
      url: {{ printf "%s/%s" (trimSuffix "/" $root.Values.webhook.url) $hook.id | quote }}
      {{- else }}
      service:
        name: {{ include "suanli.webhook.serviceName" $root }}
        namespace: {{ $root.Release.Namespace }}
        port: {{ $root.Values.webhook.servicePort }}
        path: /{{ $hook.id }}
      {{- end }}
      {{- if $helmCerts }}
      caBundle: {{ $root.suanliWebhookTLS.ca | b64enc }}
      {{- end }}
  {{- end }}
{{- end }}
