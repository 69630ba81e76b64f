"""The API's identity: group, version, and the names kubectl knows each kind by.

Everything here is data. The kind modules describe themselves with a :class:`KindInfo` (names,
scope, printer columns) and the CRD generator turns that plus the pydantic model into a
CustomResourceDefinition, so a kind's kubectl surface is declared beside its fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

GROUP: Final = "suanli.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# Every kind is listed by `kubectl get suanli`.
CATEGORY: Final = "suanli"

# Prefix for the labels and annotations the operator puts on what it creates.
LABEL_PREFIX: Final = f"{GROUP}/"

Scope = Literal["Namespaced", "Cluster"]
ColumnType = Literal["integer", "number", "string", "boolean", "date"]


@dataclass(frozen=True)
class PrinterColumn:
    """One column of ``kubectl get`` output (a CRD ``additionalPrinterColumns`` entry).

    ``json_path`` is a kubectl JSONPath without the braces, e.g. ``.status.phase``. A column
    with ``priority`` 1 shows only with ``-o wide``.
    """

    name: str
    type: ColumnType
    json_path: str
    description: str
    priority: int = 0
    format: str | None = None


# kubectl adds no Age column once a CRD declares its own columns, so every kind lists it.
AGE_COLUMN: Final = PrinterColumn(
    name="Age",
    type="date",
    json_path=".metadata.creationTimestamp",
    description="Time since the object was created.",
)


@dataclass(frozen=True)
class KindInfo:
    """How the API server and kubectl name a kind."""

    kind: str
    plural: str
    scope: Scope
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = field(default=(CATEGORY,))
    status_subresource: bool = True
    """Whether the kind has a status written apart from its spec (immutable records have
    none)."""

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def namespaced(self) -> bool:
        return self.scope == "Namespaced"
