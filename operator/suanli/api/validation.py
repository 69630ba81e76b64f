"""Field-path errors: the one shape every validation failure takes.

A manifest can fail in two places: parsing (pydantic: types, limits, unknown fields) and the
per-kind rules a schema cannot express (``validate_<kind>`` in each kind module). Both report a
list of :class:`FieldError`, each naming the field by its JSON path as kubectl users know it
(``spec.placement.clusters[1]``), so the admission webhook and the handlers print them the same
way and tests compare paths rather than wording.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

PathPart = str | int


@dataclass(frozen=True, order=True)
class FieldError:
    """One problem with one field.

    Attributes:
        path: JSON path of the field, e.g. ``spec.validUntil`` or ``spec.prices[1].gpuModel``;
            empty for a problem with the whole object.
        message: what is wrong, naming the limit that was broken.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def join_path(parts: Iterable[PathPart]) -> str:
    """Render path parts as a JSON path: ``("spec", "prices", 1, "gpuModel")`` ->
    ``spec.prices[1].gpuModel``. Keys that are not plain names (``nvidia.com/gpu``) go in
    brackets."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.replace("_", "").isalnum():
            text += f".{part}" if text else part
        else:
            text += f"[{part}]"
    return text


def from_validation_error(
    error: ValidationError, prefix: Sequence[PathPart] = ()
) -> list[FieldError]:
    """Turn a pydantic ``ValidationError`` into field errors with wire (camelCase) paths.

    Args:
        error: raised by ``model_validate`` on a model whose errors locate fields by alias.
        prefix: path parts to put in front, when the model validated a part of an object.
    """
    errors: list[FieldError] = []
    for item in error.errors(include_url=False):
        path = join_path([*prefix, *item["loc"]])
        errors.append(FieldError(path, _message(item)))
    return errors


def _message(item: Any) -> str:
    kind: str = item["type"]
    message: str = item["msg"]
    if kind == "extra_forbidden":
        return "unknown field; check its spelling and the kind's fields with `kubectl explain`"
    if kind == "missing":
        return "required field is missing"
    # Our own validators raise ValueError; pydantic prefixes its message with "Value error, ".
    return message.removeprefix("Value error, ")


def parse(model: type[M], data: Any) -> tuple[M | None, list[FieldError]]:
    """Validate ``data`` into ``model``; the object, or ``None`` and the errors."""
    try:
        return model.model_validate(data), []
    except ValidationError as error:
        return None, from_validation_error(error)


def format_errors(errors: Iterable[FieldError]) -> str:
    """All errors on one line each, for a webhook denial or a CLI message."""
    return "\n".join(str(error) for error in errors)


def find_duplicates(values: Sequence[str]) -> list[int]:
    """Indexes of entries that repeat an earlier entry."""
    seen: set[str] = set()
    duplicates: list[int] = []
    for index, value in enumerate(values):
        if value in seen:
            duplicates.append(index)
        seen.add(value)
    return duplicates


def duplicate_errors(path: str, values: Sequence[str], what: str) -> list[FieldError]:
    """One error per repeated entry of a list that must hold unique values."""
    return [
        FieldError(f"{path}[{index}]", f"duplicate {what} {values[index]!r}; list each once")
        for index in find_duplicates(values)
    ]
