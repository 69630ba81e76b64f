"""The chart's generated files match their sources: the API models, rbac.py, the exporter chart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from suanli import chart_render
from suanli.api.crdgen import generate as generate_crds
from suanli.rbac import chart_roles, operator_role

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / chart_render.CHART


def test_the_chart_is_up_to_date_with_its_sources() -> None:
    found = chart_render.differences(ROOT)
    assert found == [], "".join(found) + "\nrun `python -m suanli.chart_render`"


def test_the_chart_crds_are_the_repository_crds() -> None:
    # crds/ is itself drift-checked against the models (tests/test_api_crds.py).
    chart_crds = {p.name: p.read_text() for p in (CHART / chart_render.CRD_DIR).glob("*.yaml")}
    assert chart_crds == {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert chart_crds == generate_crds()


def test_the_exporter_sub_chart_is_a_copy_of_the_exporter_chart() -> None:
    source = ROOT / chart_render.EXPORTER_CHART
    copy = CHART / chart_render.EXPORTER_SUBCHART
    files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file())
    for relative in files:
        assert (copy / relative).read_bytes() == (source / relative).read_bytes(), relative


def test_generation_is_deterministic() -> None:
    assert chart_render.generate(ROOT) == chart_render.generate(ROOT)


def test_the_operator_rules_are_split_without_loss() -> None:
    cluster, secrets, leader = chart_render.operator_rules_split()
    assert secrets, "rbac.py grants the operator Secrets: the chart grants them per namespace"
    assert all(rule["resources"] == ["secrets", "configmaps"] for rule in secrets)
    assert sorted(rule["resources"][0] for rule in leader) == ["leases", "pods"]
    everything = cluster + secrets + leader
    assert sorted(map(str, everything)) == sorted(map(str, operator_role()["rules"]))


def test_the_rules_template_names_every_role() -> None:
    text = chart_render.render_rules()
    for role in chart_roles():
        assert f"\n{role['metadata']['name']}\n" in text
    # Each rules block is YAML that reads back as the role's rules.
    for role in chart_roles():
        key = chart_render._template_key(role["metadata"]["name"])
        start = text.index(f'{{{{- define "suanli.rbac.{key}.rules" -}}}}\n')
        block = text[start:].split("\n", 1)[1].split("{{- end -}}", 1)[0]
        rules = yaml.safe_load(block)
        if key == "operator":
            _, secrets, leader = chart_render.operator_rules_split()
            rules += secrets + leader
        assert sorted(map(str, rules)) == sorted(map(str, role["rules"]))


def test_write_repairs_a_stale_chart(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(ROOT / "charts", repository / "charts")
    chart = repository / chart_render.CHART
    (chart / chart_render.CRD_DIR / "suanli.io_gone.yaml").write_text("stale\n")
    (chart / chart_render.RULES_TEMPLATE).write_text("edited by hand\n")
    assert len(chart_render.differences(repository)) == 2
    changed = chart_render.write(repository)
    assert sorted(map(str, changed)) == sorted(
        [str(chart_render.CRD_DIR / "suanli.io_gone.yaml"), str(chart_render.RULES_TEMPLATE)]
    )
    assert chart_render.differences(repository) == []


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert chart_render.main(["--check", "--repository", str(ROOT)]) == 0
    assert "up to date" in capsys.readouterr().out
    repository = tmp_path / "repo"
    shutil.copytree(ROOT / "charts", repository / "charts")
    (repository / chart_render.CHART / chart_render.RULES_TEMPLATE).write_text("")
    assert chart_render.main(["--check", "--repository", str(repository)]) == 1
    assert "suanli.rbac.tenant.rules" in capsys.readouterr().out
    assert chart_render.main(["--check", "--repository", str(tmp_path)]) == 2
