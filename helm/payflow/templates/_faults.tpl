{{/*
The INJECT_* keys of the `faults:` values, as JSON (sorted keys).

The vocabulary (fault names, switch keys, parameter keys, types, defaults) comes from
files/vocabulary.json, which is generated from payflow/faults.py (helm/sync.py) and
checked up to date by a test; so is the result of this template, against
payflow.faults.helm_values_to_env. The spelling is FaultSet.to_env()'s: every switch as
"true"/"false", the first parameter of a fault that is off as 0, every parameter of a fault
that is on; integers as integers, other numbers with a decimal point.
*/}}
{{- define "payflow.faultsEnv" -}}
{{- $vocabulary := .Files.Get "files/vocabulary.json" | fromJson }}
{{- $values := .Values.faults | default dict }}
{{- $env := dict }}
{{- range $fault := $vocabulary.faults }}
{{- $given := index $values $fault.name | default dict }}
{{- $on := false }}
{{- if $fault.switch }}
{{- $on = eq (toString (index $given "enabled")) "true" }}
{{- $_ := set $env $fault.switch (ternary "true" "false" $on) }}
{{- else }}
{{- $primary := index $fault.params 0 }}
{{- $value := $primary.default }}
{{- if hasKey $given $primary.key }}{{ $value = index $given $primary.key }}{{ end }}
{{- $on = gt (float64 $value) 0.0 }}
{{- if not $on }}
{{- $_ := set $env $primary.env (include "payflow.faultValue" (dict "param" $primary "value" 0)) }}
{{- end }}
{{- end }}
{{- if $on }}
{{- range $param := $fault.params }}
{{- $value := $param.default }}
{{- if hasKey $given $param.key }}{{ $value = index $given $param.key }}{{ end }}
{{- $_ := set $env $param.env (include "payflow.faultValue" (dict "param" $param "value" $value)) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $env }}
{{- end }}

{{/* One parameter value as the app reads it: Param.format in payflow/faults.py. */}}
{{- define "payflow.faultValue" -}}
{{- if eq .param.type "integer" }}
{{- int64 .value }}
{{- else }}
{{- $f := float64 .value }}
{{- if eq $f (floor $f) }}
{{- printf "%.1f" $f }}
{{- else }}
{{- $f }}
{{- end }}
{{- end }}
{{- end }}
