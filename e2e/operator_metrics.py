"""What the operator under test exports on its metrics port, read the way Prometheus would."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from suanli.devenv.operator_process import OperatorProcess


def scrape(operator: OperatorProcess) -> str:
    """The operator's /metrics page, in the text exposition format."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as page:
        text: str = page.read().decode()
    return text


def samples(operator: OperatorProcess) -> dict[str, float]:
    """Every sample, keyed by its name and its sorted labels (``name[('label', 'value')]``)."""
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(scrape(operator))
        for sample in family.samples
    }


def value(operator: OperatorProcess, name: str, **labels: str) -> float:
    """The first sample called ``name`` carrying ``labels``; 0 when none is exported yet."""
    for family in text_string_to_metric_families(scrape(operator)):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
