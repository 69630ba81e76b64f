"""What an on-call admin looks at and is woken by: the Grafana dashboard, the alert rules, and
the metric names both may use. The chart's copies (charts/suanli/files/monitoring/) are
generated from here by ``python -m suanli.chart_render``."""
