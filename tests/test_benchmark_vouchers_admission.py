"""The in-memory admission micro-benchmark runs against the current API (it had rotted once,
unnoticed): every figure it prints, for every ledger size asked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "vouchers_admission.py"


def test_the_admission_micro_benchmark_prints_every_figure_for_each_ledger_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.spec_from_file_location("vouchers_admission", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.main(["--entries", "0", "25", "--repeats", "3", "--members", "2"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    figures = {(row[0], " ".join(row[1:-2])) for row in rows if "bytes" not in row}
    for entries in ("0", "25"):
        for what in ("evaluate (one job)", "book.admit (one hold)", "programme check + hold"):
            assert (entries, what) in figures
