"""The API models: money, durations, times, aliases, unknown fields, conditions, stored objects."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from suanli.api import common, reasons
from suanli.api.common import (
    CONDITION_TYPE_PATTERN,
    DURATION_PATTERN,
    MONEY_MAX_WHOLE,
    MONEY_PATTERN,
    REASON_PATTERN,
    Condition,
    ConditionStatus,
    format_duration,
    format_money,
    format_timestamp,
    parse_duration,
    parse_money,
    parse_timestamp,
    set_condition,
)
from suanli.api.computejob import ComputeJob, ComputeJobSpec, JobPhase, PlacementPolicy
from suanli.api.crdgen import structural_schema
from suanli.api.kinds import KINDS, kind_named
from suanli.api.membercluster import MemberCluster
from suanli.api.meta import API_VERSION
from suanli.api.validation import from_validation_error
from suanli.api.voucherquota import VoucherQuota

DATA = Path(__file__).parent / "data" / "api"


class KubectlLoader(yaml.SafeLoader):
    """Loads YAML the way kubectl sends it: times stay strings."""


KubectlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def minimal_job() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ComputeJob",
        "metadata": {"name": "job", "namespace": "tenant"},
        "spec": {
            "maxRuntime": "30m",
            "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}},
        },
    }


# --- money --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "0.00"),
        ("1200", "1200.00"),
        ("1200.5", "1200.50"),
        ("1200.55", "1200.55"),
        (0, "0.00"),
        (50000, "50000.00"),
        (MONEY_MAX_WHOLE, f"{MONEY_MAX_WHOLE}.00"),
        (Decimal("1.1"), "1.10"),
        (Decimal("1.100"), "1.10"),
    ],
)
def test_money_accepts_whole_numbers_and_decimal_strings(value: object, expected: str) -> None:
    assert format_money(parse_money(value)) == expected


@pytest.mark.parametrize(
    "value",
    [
        1.5,  # a YAML float: cents would not survive binary floating point
        1.0,
        True,
        None,
        -1,
        MONEY_MAX_WHOLE + 1,
        "-1",
        "1.234",
        "01",
        "1e3",
        " 12",
        "",
        "1,200",
        "1200.",
        ".5",
        "1" * 13,
        Decimal("NaN"),
        Decimal("-1"),
        Decimal("0.001"),
        Decimal("1e13"),
    ],
)
def test_money_refuses_floats_and_malformed_amounts(value: object) -> None:
    with pytest.raises(ValueError):
        parse_money(value)


def test_money_float_message_says_how_to_write_it() -> None:
    with pytest.raises(ValueError, match="quote"):
        parse_money(12.5)


@given(st.integers(min_value=0, max_value=MONEY_MAX_WHOLE * 100 + 99))
def test_money_round_trips_through_its_wire_form(cents: int) -> None:
    amount = Decimal(cents) / 100
    text = format_money(amount)
    assert re.fullmatch(MONEY_PATTERN, text)
    assert parse_money(text) == amount


def test_money_is_decimal_in_python_and_string_on_the_wire() -> None:
    voucher = VoucherQuota.model_validate(
        {
            "metadata": {"name": "v", "namespace": "t"},
            "spec": {"amount": 100, "validUntil": "2030-01-01T00:00:00Z", "creditLine": "0.5"},
        }
    )
    assert voucher.spec.amount == Decimal(100)
    assert isinstance(voucher.spec.credit_line, Decimal)
    assert voucher.spec.ceiling == Decimal("100.50")
    spec = voucher.to_dict()["spec"]
    assert spec["amount"] == "100.00"
    assert spec["creditLine"] == "0.50"


# --- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1h0m30s", 3630),
        ("1h30s", 3630),
        ("90m", 5400),
        ("720h", 2_592_000),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert re.fullmatch(DURATION_PATTERN, text)


@pytest.mark.parametrize(
    "text", ["", "1.5h", "1d", "90", "1m1h", "-1s", "1h 30m", "100000h", "1H", "1ms", "h"]
)
def test_parse_duration_refuses_other_forms(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
    assert not re.fullmatch(DURATION_PATTERN, text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (60, "1m"), (5400, "1h30m"), (3630, "1h30s"), (86400, "24h")],
)
def test_format_duration_is_canonical(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text
    assert format_duration(timedelta(seconds=seconds)) == text


@given(st.integers(min_value=0, max_value=99_999 * 3600 + 3599))
def test_duration_round_trips(seconds: int) -> None:
    text = format_duration(seconds)
    assert re.fullmatch(DURATION_PATTERN, text)
    assert parse_duration(text) == seconds


@given(st.text(alphabet="0123456789hms.d -", max_size=14))
def test_duration_parser_and_crd_pattern_agree(text: str) -> None:
    try:
        parse_duration(text)
        parsed = True
    except ValueError:
        parsed = False
    assert parsed == bool(re.fullmatch(DURATION_PATTERN, text))


def test_duration_is_timedelta_in_python() -> None:
    job = ComputeJob.model_validate(minimal_job())
    assert job.spec.max_runtime == timedelta(minutes=30)
    job.spec.max_runtime = timedelta(minutes=90)
    assert job.to_dict()["spec"]["maxRuntime"] == "1h30m"


def test_duration_refuses_bare_numbers() -> None:
    data = minimal_job()
    data["spec"]["maxRuntime"] = 1800
    with pytest.raises(ValidationError) as caught:
        ComputeJob.model_validate(data)
    assert [error.path for error in from_validation_error(caught.value)] == ["spec.maxRuntime"]


# --- times --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T08:00:00+08:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01t00:00:00.123456789z", datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_parse_timestamp(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-01T00:00:00",  # no zone
        "2026-01-01",
        "2026-01-01 00:00:00Z",
        "yesterday",
        datetime(2026, 1, 1),  # naive
        1767225600,
    ],
)
def test_parse_timestamp_refuses_zoneless_or_malformed(value: object) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value)


def test_format_timestamp_is_utc_seconds() -> None:
    shanghai = timezone(timedelta(hours=8))
    moment = datetime(2026, 1, 1, 8, 0, 0, 999999, tzinfo=shanghai)
    assert format_timestamp(moment) == "2026-01-01T00:00:00Z"


# --- models: names, defaults, unknown fields ----------------------------------------------------


def test_kinds_have_our_group_and_version() -> None:
    for kind in KINDS:
        fields = kind.model.model_fields
        assert fields["api_version"].default == API_VERSION
        assert fields["kind"].default == kind.info.kind


def test_defaults() -> None:
    job = ComputeJob.model_validate(minimal_job())
    assert job.spec.replicas == 1
    assert job.spec.gpus_per_replica == 1
    assert job.spec.total_gpus == 1
    assert job.spec.priority == 0
    assert job.spec.voucher_ref is None
    assert job.spec.placement.policy is PlacementPolicy.CHEAPEST
    assert job.status.phase is None
    assert job.status.conditions == []


def test_python_names_and_json_names_both_work() -> None:
    by_alias = ComputeJobSpec.model_validate(
        {"gpusPerReplica": 2, "maxRuntime": "1h", "template": {}}
    )
    by_name = ComputeJobSpec(gpus_per_replica=2, max_runtime=timedelta(hours=1), template={})
    assert by_alias == by_name
    dumped = by_name.to_dict()
    assert dumped["gpusPerReplica"] == 2
    assert "gpus_per_replica" not in dumped


def test_acronyms_are_spelled_the_kubernetes_way() -> None:
    aliases = {
        field.alias
        for model in _all_models()
        for field in model.model_fields.values()
        if field.alias
    }
    assert {
        "maxGPUsPerJob",
        "maxConcurrentGPUs",
        "allowedGPUModels",
        "pricePerGPUHour",
        "totalGPUs",
        "freeGPUs",
        "activeGPUs",
        "gpuModels",
        "gpusPerReplica",
    } <= aliases
    assert not any("Gpu" in alias for alias in aliases)


def test_round_trip_through_the_wire_form() -> None:
    data = minimal_job()
    data["spec"]["placement"] = {"clusters": ["member-a"], "policy": "MostHeadroom"}
    data["spec"]["voucherRef"] = {"name": "acme"}
    job = ComputeJob.model_validate(data)
    assert ComputeJob.model_validate(job.to_dict()) == job


@pytest.mark.parametrize(
    ("where", "path"),
    [
        (("spec",), "spec.replica"),
        (("spec", "placement"), "spec.placement.replica"),
        (("spec", "voucherRef"), "spec.voucherRef.replica"),
        (("status",), "status.replica"),
        ((), "replica"),
    ],
)
def test_unknown_fields_are_refused(where: tuple[str, ...], path: str) -> None:
    data = minimal_job()
    data["spec"]["voucherRef"] = {"name": "acme"}
    data["spec"]["placement"] = {}
    data["status"] = {}
    target = data
    for key in where:
        target = target[key]
    target["replica"] = 2
    with pytest.raises(ValidationError) as caught:
        ComputeJob.model_validate(data)
    errors = from_validation_error(caught.value)
    assert [error.path for error in errors] == [path]
    assert "unknown field" in errors[0].message


def test_unknown_fields_are_kept_inside_the_pod_template() -> None:
    data = minimal_job()
    template = data["spec"]["template"]
    template["spec"]["tolerations"] = [{"key": "gpu", "operator": "Exists"}]
    template["spec"]["someFutureField"] = {"nested": [1, 2, 3]}
    job = ComputeJob.model_validate(data)
    assert job.to_dict()["spec"]["template"] == template


def test_metadata_keeps_fields_the_api_server_adds() -> None:
    data = minimal_job()
    data["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    job = ComputeJob.model_validate(data)
    assert job.to_dict()["metadata"]["managedFields"] == [{"manager": "kubectl"}]


# --- descriptions -------------------------------------------------------------------------------


def _all_models() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    pending: list[type[BaseModel]] = [kind.model for kind in KINDS]
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            pending += _models_in(field.annotation)
    return seen


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in getattr(annotation, "__args__", ()) for model in _models_in(arg)]


def test_walk_finds_the_nested_models() -> None:
    names = {model.__name__ for model in _all_models()}
    assert {"Placement", "Attempt", "Condition", "VoucherLimits", "GPUPrice"} <= names


@pytest.mark.parametrize("model", _all_models(), ids=lambda model: model.__name__)
def test_every_field_is_described_starting_with_its_json_name(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        json_name = field.alias or name
        assert field.description, f"{model.__name__}.{name} has no description"
        assert re.match(rf"{re.escape(json_name)}\b", field.description), (
            f"{model.__name__}.{name}: description should start with {json_name!r}: "
            f"{field.description!r}"
        )


def test_every_model_has_a_docstring() -> None:
    for model in _all_models():
        assert model.__doc__ and model.__doc__.strip(), model.__name__


# --- reasons and conditions ---------------------------------------------------------------------


@pytest.mark.parametrize("enum", reasons.ALL_REASONS, ids=lambda enum: enum.__name__)
def test_reasons_are_valid_condition_reasons(enum: type[Any]) -> None:
    values = [member.value for member in enum]
    assert len(values) == len(enum.__members__), "two reasons share a value"
    for value in values:
        assert re.fullmatch(REASON_PATTERN, value), value


@pytest.mark.parametrize("enum", reasons.ALL_CONDITION_TYPES, ids=lambda enum: enum.__name__)
def test_condition_types_are_valid(enum: type[Any]) -> None:
    for member in enum:
        assert re.fullmatch(CONDITION_TYPE_PATTERN, member.value), member.value


def test_condition_types_are_the_documented_ones() -> None:
    assert {member.value for member in reasons.VoucherConditionType} == {
        "Active",
        "Expired",
        "Exhausted",
        "LedgerNearlyFull",
    }
    assert {member.value for member in reasons.MemberConditionType} == {
        "Ready",
        "Reachable",
        "TelemetryFresh",
    }


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    conditions: list[Condition] = []
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = t0 + timedelta(minutes=1)
    t2 = t0 + timedelta(minutes=2)
    ready = reasons.MemberConditionType.READY
    assert set_condition(
        conditions, ready, ConditionStatus.TRUE, reasons.MemberReason.MEMBER_READY, "ok", now=t0
    )
    # The same state again changes nothing, so no status write is needed.
    assert not set_condition(
        conditions, ready, ConditionStatus.TRUE, reasons.MemberReason.MEMBER_READY, "ok", now=t1
    )
    # A new message with the same status keeps the transition time.
    assert set_condition(
        conditions, ready, ConditionStatus.TRUE, reasons.MemberReason.MEMBER_READY, "9 free", now=t1
    )
    assert conditions[0].last_transition_time == t0
    assert set_condition(
        conditions, ready, ConditionStatus.FALSE, reasons.MemberReason.UNREACHABLE, "down", now=t2
    )
    assert len(conditions) == 1
    assert conditions[0].last_transition_time == t2
    assert common.is_condition_true(conditions, ready) is False
    wire = conditions[0].to_dict()
    assert wire == {
        "type": "Ready",
        "status": "False",
        "reason": "Unreachable",
        "message": "down",
        "lastTransitionTime": "2026-01-01T00:02:00Z",
    }


# --- objects as the API server stores them ------------------------------------------------------


def _stored_objects() -> list[dict[str, Any]]:
    text = (DATA / "stored-objects.yaml").read_text(encoding="utf-8")
    return [doc for doc in yaml.load_all(text, Loader=KubectlLoader) if doc]


@pytest.mark.parametrize("data", _stored_objects(), ids=lambda data: data["kind"])
def test_stored_objects_parse_validate_and_match_the_crd_schema(data: dict[str, Any]) -> None:
    kind = kind_named(data["kind"])
    assert kind is not None
    assert kind.validate(data) == []
    jsonschema.Draft7Validator(
        structural_schema(kind.model), format_checker=jsonschema.FormatChecker()
    ).validate(data)
    # What the operator would write back is accepted by the schema too.
    written = kind.model.model_validate(data).to_dict()
    jsonschema.Draft7Validator(structural_schema(kind.model)).validate(written)


def test_stored_objects_read_as_typed_facts() -> None:
    job_data, voucher_data, member_data = _stored_objects()
    job = ComputeJob.model_validate(job_data)
    assert job.status.phase is JobPhase.SUCCEEDED
    assert job.status.charged_cost == Decimal("456.00")
    assert job.status.attempts[1].gpu_seconds == 57600
    assert job.status.start_time == datetime(2026, 3, 2, 8, 5, 7, 123456, tzinfo=UTC)
    assert common.is_condition_true(job.status.conditions, reasons.JobConditionType.CHARGED)
    voucher = VoucherQuota.model_validate(voucher_data)
    assert voucher.spec.credit_line == Decimal(10000)
    assert voucher.spec.limits.max_runtime == timedelta(hours=24)
    assert voucher.status.reserved == Decimal("1024.00")
    member = MemberCluster.model_validate(member_data)
    assert member.spec.price_of("H100") == Decimal("28.50")
    assert member.spec.price_of("A800") is None
    assert member.status.gpus[0].free == 24
