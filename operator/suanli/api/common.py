"""Building blocks shared by every kind: the model base, money, durations, times, conditions.

Three representation decisions live here, once, so that every kind agrees on them.

Money
    A non-negative decimal with at most two places (fen/cents), held as :class:`decimal.Decimal`
    in Python and never as a float. On the wire it is an int-or-string, like Kubernetes'
    ``resource.Quantity``: ``amount: 50000`` and ``amount: "1200.50"`` are both accepted, while
    an unquoted ``12.50`` (a YAML float) is refused by the API server and by the models, because
    binary floating point cannot hold every cent. Whatever was written, the models serialize
    money as a string with exactly two decimals ("1200.50"), which is what status fields carry.
    Arithmetic that produces more decimals (GPU-seconds times an hourly price) must round
    before it stores a value; the models refuse a third decimal rather than guess how.

Durations
    One convention everywhere: Kubernetes-style strings made of whole hours, minutes and
    seconds in that order, each part optional but at least one present: ``"90s"``, ``"30m"``,
    ``"2h"``, ``"1h30m"``, ``"1h0m30s"``. No fractions, days or milliseconds. In Python a duration
    is a :class:`datetime.timedelta`; it serializes back in canonical form (``"90m"`` becomes
    ``"1h30m"``).

Times
    RFC 3339 strings with a zone (``"2025-01-01T00:00:00Z"``), :class:`datetime.datetime` with a
    timezone in Python, written back in UTC at second precision like ``metav1.Time``.

The JSON schema of each type is declared by hand (``WithJsonSchema``) so that the CRD generator
emits exactly the structural schema meant here rather than what pydantic would infer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

# --- names --------------------------------------------------------------------------------------

# RFC 1123 label: what Kubernetes requires of namespace names and label values' usual shape.
DNS_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_LABEL_MAX: Final = 63
# RFC 1123 subdomain: what Kubernetes requires of most object names.
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_SUBDOMAIN_MAX: Final = 253
# A GPU product name as the platform lists it ("H100", "A800", "L40S", "H100-80GB"). It is used
# as a label value and a metric label, hence the label-value shape.
GPU_MODEL_PATTERN: Final = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
GPU_MODEL_MAX: Final = 63
CURRENCY_PATTERN: Final = r"^[A-Z]{3}$"

_DNS_LABEL_RE: Final = re.compile(DNS_LABEL_PATTERN)
_DNS_SUBDOMAIN_RE: Final = re.compile(DNS_SUBDOMAIN_PATTERN)


def is_dns_label(value: str) -> bool:
    """Whether ``value`` is an RFC 1123 label (lower-case alphanumerics and '-', at most 63)."""
    return bool(_DNS_LABEL_RE.fullmatch(value))


def is_dns_subdomain(value: str) -> bool:
    """Whether ``value`` is an RFC 1123 subdomain (what most object names, nodes', must be)."""
    return len(value) <= DNS_SUBDOMAIN_MAX and bool(_DNS_SUBDOMAIN_RE.fullmatch(value))


DNSLabel = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, max_length=DNS_LABEL_MAX)]
DNSSubdomain = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=DNS_SUBDOMAIN_MAX)]
GPUModel = Annotated[str, Field(pattern=GPU_MODEL_PATTERN, max_length=GPU_MODEL_MAX)]
Currency = Annotated[str, Field(pattern=CURRENCY_PATTERN, min_length=3, max_length=3)]
DEFAULT_CURRENCY: Final = "CNY"

# --- money --------------------------------------------------------------------------------------

MONEY_MAX_WHOLE: Final = 999_999_999_999  # twelve digits: far above any voucher (1e9 CNY/year)
MONEY_PATTERN: Final = r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?$"
MONEY_MAX_LENGTH: Final = 15
CENT: Final = Decimal("0.01")
ZERO: Final = Decimal("0.00")
MONEY_HELP: Final = (
    'a whole number or a quoted decimal with at most two places, e.g. 50000 or "1200.50"'
)

_MONEY_RE: Final = re.compile(MONEY_PATTERN)


def parse_money(value: object) -> Decimal:
    """Parse an amount written by a user or computed by the operator.

    Accepts a non-negative ``int``, a string matching :data:`MONEY_PATTERN`, or a ``Decimal`` with
    at most two places. Refuses floats and bools with a message that says how to write it.

    Raises:
        ValueError: the value is not a valid amount.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected an amount, {MONEY_HELP}; got a boolean")
    if isinstance(value, float):
        raise ValueError(
            f"amounts must not be floating-point numbers (write {MONEY_HELP}); "
            "in YAML, quote amounts that have decimals"
        )
    if isinstance(value, int):
        if not 0 <= value <= MONEY_MAX_WHOLE:
            raise ValueError(f"amount must be between 0 and {MONEY_MAX_WHOLE}, got {value}")
        return Decimal(value)
    if isinstance(value, str):
        if not _MONEY_RE.fullmatch(value):
            raise ValueError(f"amount {value!r} is not {MONEY_HELP} (at most 12 whole digits)")
        return Decimal(value)
    if isinstance(value, Decimal):
        return _check_decimal(value)
    raise ValueError(f"expected an amount, {MONEY_HELP}; got {type(value).__name__}")


def _check_decimal(value: Decimal) -> Decimal:
    if not value.is_finite() or value < 0:
        raise ValueError(f"amount must be a finite, non-negative number, got {value}")
    try:
        exact = value.quantize(CENT) == value
    except InvalidOperation:
        exact = False
    if not exact:
        raise ValueError(f"amount {value} has more than two decimal places; round it first")
    if value > MONEY_MAX_WHOLE + Decimal("0.99"):
        raise ValueError(f"amount {value} is above the maximum of {MONEY_MAX_WHOLE}.99")
    return value


def format_money(value: Decimal) -> str:
    """The canonical wire form of an amount: a string with exactly two decimals."""
    return str(value.quantize(CENT))


_MONEY_JSON_SCHEMA: Final[dict[str, Any]] = {
    # The int-or-string form Kubernetes allows in a structural schema (as resource.Quantity
    # uses): the anyOf branches carry nothing but their type; the limits sit beside them and
    # each applies to the values of its kind (pattern to strings, minimum/maximum to integers).
    "x-kubernetes-int-or-string": True,
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": MONEY_PATTERN,
    "maxLength": MONEY_MAX_LENGTH,
    "minimum": 0,
    "maximum": MONEY_MAX_WHOLE,
}

Money = Annotated[
    Decimal,
    PlainValidator(parse_money),
    PlainSerializer(format_money, return_type=str),
    WithJsonSchema(_MONEY_JSON_SCHEMA),
]
"""An amount of money: ``Decimal`` in Python, int-or-string on the wire (see module docs)."""

# --- durations ----------------------------------------------------------------------------------

DURATION_PATTERN: Final = (
    r"^([0-9]{1,5}h([0-9]{1,5}m)?([0-9]{1,5}s)?|[0-9]{1,5}m([0-9]{1,5}s)?|[0-9]{1,5}s)$"
)
DURATION_MAX_LENGTH: Final = 20
DURATION_HELP: Final = 'whole hours, minutes and seconds such as "90s", "30m", "2h" or "1h30m"'

_DURATION_RE: Final = re.compile(r"^(?:(\d{1,5})h)?(?:(\d{1,5})m)?(?:(\d{1,5})s)?$")


def parse_duration(text: str) -> int:
    """Parse a duration string into whole seconds.

    >>> parse_duration("1h30m")
    5400

    Raises:
        ValueError: ``text`` does not follow the one duration convention.
    """
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"duration {text!r} is not {DURATION_HELP}")
    hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def format_duration(value: timedelta | int) -> str:
    """The canonical string for a whole number of seconds: ``5400`` becomes ``"1h30m"``."""
    total = int(value.total_seconds()) if isinstance(value, timedelta) else value
    if total < 0:
        raise ValueError(f"durations are never negative, got {total}s")
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    text = ""
    if hours:
        text += f"{hours}h"
    if minutes:
        text += f"{minutes}m"
    if seconds or not text:
        text += f"{seconds}s"
    return text


def _validate_duration(value: object) -> timedelta:
    if isinstance(value, str):
        return timedelta(seconds=parse_duration(value))
    if isinstance(value, timedelta):
        if value < timedelta(0) or value.microseconds:
            raise ValueError(f"a duration must be a whole, non-negative number of seconds: {value}")
        return value
    raise ValueError(f"expected a duration string, {DURATION_HELP}; got {type(value).__name__}")


Duration = Annotated[
    timedelta,
    PlainValidator(_validate_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "maxLength": DURATION_MAX_LENGTH}
    ),
]
"""A duration: ``timedelta`` in Python, a string like ``"1h30m"`` on the wire."""

# --- times --------------------------------------------------------------------------------------

_RFC3339_RE: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_timestamp(value: object) -> datetime:
    """Parse an RFC 3339 time with a zone (or take a zone-aware ``datetime`` as it is).

    Raises:
        ValueError: not an RFC 3339 time, or no zone.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a time must carry a zone, e.g. 2025-01-01T00:00:00Z")
        return value
    if not isinstance(value, str) or not _RFC3339_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not an RFC 3339 time such as 2025-01-01T00:00:00Z")
    text = value.upper()
    # Python parses at most six fractional digits; Kubernetes may write nine.
    text = re.sub(r"\.(\d{6})\d+", r".\1", text)
    return datetime.fromisoformat(text)


def format_timestamp(value: datetime) -> str:
    """The wire form Kubernetes uses for times: UTC, second precision, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[
    datetime,
    PlainValidator(parse_timestamp),
    PlainSerializer(format_timestamp, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A point in time: aware ``datetime`` in Python, RFC 3339 on the wire."""

# --- model base ---------------------------------------------------------------------------------


class ApiModel(BaseModel):
    """Base of every API object and sub-object.

    camelCase JSON names (acronyms spelled out by explicit aliases, e.g. ``maxGPUsPerJob``),
    Python names accepted too, and unknown fields refused: a typo in a manifest is an error, not
    a silently ignored setting. The embedded pod template is the one free-form place.
    """

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the wire names, leaving out unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectMeta(BaseModel):
    """Standard Kubernetes object metadata.

    The API server owns and validates metadata, so the CRD schema leaves it alone; this model
    reads the parts the operator uses and keeps the rest (managedFields and whatever future
    Kubernetes versions add) instead of refusing it.
    """

    model_config = ConfigDict(
        extra="allow",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    name: str | None = Field(None, description="name is the object's name.")
    generate_name: str | None = Field(
        None, description="generateName is the prefix the API server completes into a name."
    )
    namespace: str | None = Field(None, description="namespace is the object's namespace.")
    uid: str | None = Field(None, description="uid is the unique id the API server assigned.")
    resource_version: str | None = Field(
        None, description="resourceVersion is the version for optimistic concurrency."
    )
    generation: int | None = Field(
        None, description="generation counts changes to the spec, starting at 1."
    )
    creation_timestamp: Timestamp | None = Field(
        None, description="creationTimestamp is when the object was created (RFC 3339)."
    )
    deletion_timestamp: Timestamp | None = Field(
        None, description="deletionTimestamp is when deletion was requested (RFC 3339)."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="labels are the object's labels."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="annotations are the object's annotations."
    )
    finalizers: list[str] = Field(
        default_factory=list, description="finalizers hold deletion until they are removed."
    )
    owner_references: list[dict[str, Any]] = Field(
        default_factory=list, description="ownerReferences name the objects this one belongs to."
    )


class LocalObjectReference(ApiModel):
    """A reference to an object of a known kind in the same namespace."""

    name: DNSSubdomain = Field(description="name is the referenced object's name.")


# --- conditions ---------------------------------------------------------------------------------

CONDITION_TYPE_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
REASON_PATTERN: Final = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
REASON_MAX: Final = 1024
MESSAGE_MAX: Final = 32768
MAX_CONDITIONS: Final = 16


class ConditionStatus(StrEnum):
    """Whether a condition holds: True, False or Unknown."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One aspect of an object's observed state, shaped like Kubernetes' metav1.Condition."""

    type: str = Field(
        pattern=CONDITION_TYPE_PATTERN,
        max_length=316,
        description="type is the aspect this condition reports, in CamelCase (e.g. Ready).",
    )
    status: ConditionStatus = Field(
        description="status is True, False or Unknown.",
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        description="observedGeneration is the metadata.generation this condition was set for.",
    )
    last_transition_time: Timestamp = Field(
        description="lastTransitionTime is when status last changed (RFC 3339).",
    )
    reason: str = Field(
        min_length=1,
        max_length=REASON_MAX,
        pattern=REASON_PATTERN,
        description="reason is a CamelCase word programs can match, at most 1024 characters.",
    )
    message: str = Field(
        "",
        max_length=MESSAGE_MAX,
        description="message explains the status to a person, at most 32768 characters.",
    )


def find_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition of ``type_``, if present."""
    return next((condition for condition in conditions if condition.type == type_), None)


def is_condition_true(conditions: Iterable[Condition], type_: str) -> bool:
    """Whether the condition of ``type_`` is present and True."""
    condition = find_condition(conditions, type_)
    return condition is not None and condition.status == ConditionStatus.TRUE


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    observed_generation: int | None = None,
) -> bool:
    """Set a condition in place, as ``meta.SetStatusCondition`` does.

    ``lastTransitionTime`` moves only when the status changes, so re-asserting the same state
    changes nothing. Returns whether anything changed, letting callers skip a status write that
    would be a no-op.
    """
    current = find_condition(conditions, type_)
    if current is None:
        conditions.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=observed_generation,
            )
        )
        return True
    unchanged = (
        current.status == status
        and current.reason == reason
        and current.message == message
        and current.observed_generation == observed_generation
    )
    if unchanged:
        return False
    if current.status != status:
        current.last_transition_time = now
    current.status = status
    current.reason = reason
    current.message = message
    current.observed_generation = observed_generation
    return True


def conditions_field(description: str) -> Any:
    """The ``conditions`` field every status has: a list keyed by type."""
    return Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description=description,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


def set_field(description: str, max_items: int) -> Any:
    """A list of unique scalars (``x-kubernetes-list-type: set``), empty by default."""
    return Field(
        default_factory=list,
        max_length=max_items,
        description=description,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
