"""The tenant data a pod template refers to, found where Kubernetes would look for it.

A ComputeJob's template is written against the tenant's hub namespace: its Secrets, ConfigMaps
and image pull Secrets live there, not on the member that runs it. The operator copies what the
template names to the member (:mod:`suanli.members.workload`), so this module answers two
questions, purely, from the template alone:

- which Secrets and ConfigMaps does it name, and from which fields (:func:`template_references`),
  so admission can refuse a name that does not exist *naming the field*, and workload sync can
  copy exactly these;
- what in it cannot be carried to a member at all (:func:`unportable_errors`):
  ``persistentVolumeClaim`` volumes. A claim is bound to a volume in one cluster's storage;
  the hub's claims mean nothing on a member, and a member's data stays in its computing center.
  A job that needs scratch space asks for a generic ephemeral volume (``ephemeral``), made by the
  member's default storage class for the pod's life.

Optional references (``optional: true``) are reported with ``optional`` set: Kubernetes starts
the pod without them, so admission does too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from suanli.api.accelerators import is_device_env
from suanli.api.common import is_dns_subdomain
from suanli.api.validation import FieldError, PathPart, join_path

TEMPLATE_PATH: tuple[PathPart, ...] = ("spec", "template", "spec")
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


class DataKind(StrEnum):
    """The kinds of tenant data a template may name."""

    SECRET = "Secret"
    CONFIG_MAP = "ConfigMap"

    @property
    def plural(self) -> str:
        return "secrets" if self is DataKind.SECRET else "configmaps"


@dataclass(frozen=True, order=True)
class Reference:
    """One place where a template names a Secret or a ConfigMap.

    Attributes:
        kind: Secret or ConfigMap.
        name: the name, in the job's own namespace.
        path: the naming field from the ComputeJob's root, e.g.
            ``spec.template.spec.containers[0].env[1].valueFrom.secretKeyRef.name``.
        optional: Kubernetes runs the pod without it.
        env_prefix: for an ``envFrom`` source, the prefix its keys get as variable names
            (``""`` without one); None for every other reference.
    """

    kind: DataKind
    name: str
    path: str
    optional: bool = False
    env_prefix: str | None = None


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


_Named = tuple[DataKind, dict[str, Any], str, tuple[PathPart, ...], str | None]
"""(kind, the object holding the name, the name's key, the path to that object, the envFrom
prefix or None)."""


def _named(
    kind: DataKind,
    holder: Any,
    key: str,
    path: tuple[PathPart, ...],
    env_prefix: str | None = None,
) -> Iterator[_Named]:
    if isinstance(holder, dict) and isinstance(holder.get(key), str) and holder[key]:
        yield (kind, holder, key, path, env_prefix)


def _spec_names(spec: Any, base: tuple[PathPart, ...]) -> Iterator[_Named]:
    """Every field of a pod spec that names a Secret or ConfigMap (the one walk both finding
    and renaming use)."""
    spec = _obj(spec)
    for index, pull in enumerate(_items(spec.get("imagePullSecrets"))):
        # A missing pull Secret fails the image pull, like a required one.
        yield from _named(DataKind.SECRET, pull, "name", (*base, "imagePullSecrets", index))
    for index, raw_volume in enumerate(_items(spec.get("volumes"))):
        at: tuple[PathPart, ...] = (*base, "volumes", index)
        volume = _obj(raw_volume)
        yield from _named(DataKind.SECRET, volume.get("secret"), "secretName", (*at, "secret"))
        yield from _named(DataKind.CONFIG_MAP, volume.get("configMap"), "name", (*at, "configMap"))
        sources = _items(_obj(volume.get("projected")).get("sources"))
        for source_index, raw_source in enumerate(sources):
            source_at = (*at, "projected", "sources", source_index)
            source = _obj(raw_source)
            yield from _named(DataKind.SECRET, source.get("secret"), "name", (*source_at, "secret"))
            yield from _named(
                DataKind.CONFIG_MAP, source.get("configMap"), "name", (*source_at, "configMap")
            )
    for list_name in CONTAINER_LISTS:
        for index, raw_container in enumerate(_items(spec.get(list_name))):
            at = (*base, list_name, index)
            container = _obj(raw_container)
            for env_index, env in enumerate(_items(container.get("env"))):
                value_from = _obj(_obj(env).get("valueFrom"))
                env_at = (*at, "env", env_index, "valueFrom")
                yield from _named(
                    DataKind.SECRET,
                    value_from.get("secretKeyRef"),
                    "name",
                    (*env_at, "secretKeyRef"),
                )
                yield from _named(
                    DataKind.CONFIG_MAP,
                    value_from.get("configMapKeyRef"),
                    "name",
                    (*env_at, "configMapKeyRef"),
                )
            for from_index, raw_env_from in enumerate(_items(container.get("envFrom"))):
                from_at = (*at, "envFrom", from_index)
                env_from = _obj(raw_env_from)
                prefix = env_from.get("prefix")
                prefix = prefix if isinstance(prefix, str) else ""
                yield from _named(
                    DataKind.SECRET,
                    env_from.get("secretRef"),
                    "name",
                    (*from_at, "secretRef"),
                    prefix,
                )
                yield from _named(
                    DataKind.CONFIG_MAP,
                    env_from.get("configMapRef"),
                    "name",
                    (*from_at, "configMapRef"),
                    prefix,
                )


def template_references(template: Mapping[str, Any]) -> list[Reference]:
    """Every Secret and ConfigMap ``template`` (a ComputeJob's ``spec.template``) names, in the
    order of the template, with the field that names it."""
    return [
        Reference(
            kind, holder[key], join_path((*path, key)), holder.get("optional") is True, prefix
        )
        for kind, holder, key, path, prefix in _spec_names(
            _obj(template).get("spec"), TEMPLATE_PATH
        )
    ]


def rename_references(template: dict[str, Any], rename: Callable[[DataKind, str], str]) -> None:
    """Replace, in place, every Secret and ConfigMap name ``template`` holds by
    ``rename(kind, name)``: the names of the copies on a member."""
    for kind, holder, key, _, _ in list(_spec_names(template.get("spec"), TEMPLATE_PATH)):
        holder[key] = rename(kind, holder[key])


MAX_DISTINCT_REFERENCES: Final = 64
"""Distinct Secrets and ConfigMaps one template may name: each is read at admission and at
every resync, and copied to the member."""


def reference_limit_errors(references: Sequence[Reference]) -> list[FieldError]:
    """Names that cannot be an object's (so no read is made for them), and more distinct
    objects than :data:`MAX_DISTINCT_REFERENCES`."""
    errors = [
        FieldError(
            reference.path,
            f"{reference.name!r} is not a valid {reference.kind} name (a DNS-1123 subdomain: "
            "lower-case letters, digits, '-' and '.', at most 253)",
        )
        for reference in references
        if not is_dns_subdomain(reference.name)
    ]
    distinct = {(r.kind, r.name) for r in references}
    if len(distinct) > MAX_DISTINCT_REFERENCES:
        errors.append(
            FieldError(
                "spec.template.spec",
                f"names {len(distinct)} distinct Secrets and ConfigMaps; at most "
                f"{MAX_DISTINCT_REFERENCES} may be named (merge some into one)",
            )
        )
    return errors


def device_env_errors(
    references: Sequence[Reference], keys: Mapping[tuple[DataKind, str], Iterable[str]]
) -> list[FieldError]:
    """A field error for each ``envFrom`` source whose keys (``keys``: each source's, as read
    from the hub) would set a device-selecting variable once prefixed
    (:func:`~suanli.api.accelerators.is_device_env`): the container runtime would hand the
    pod devices it does not pay for."""
    errors: list[FieldError] = []
    for reference in references:
        if reference.env_prefix is None:
            continue
        named = sorted(
            f"{reference.env_prefix}{key}"
            for key in keys.get((reference.kind, reference.name), ())
            if is_device_env(f"{reference.env_prefix}{key}")
        )
        if named:
            errors.append(
                FieldError(
                    reference.path,
                    f"{reference.kind} {reference.name!r} would set {', '.join(named)} in the "
                    "container, which makes the node's runtime hand out accelerators; remove "
                    "those keys (or the prefix): the job's accelerators come from "
                    "spec.gpusPerReplica",
                )
            )
    return errors


def data_keys(kind: DataKind, source: Mapping[str, Any]) -> list[str]:
    """The keys an ``envFrom`` of ``source`` (a Secret or ConfigMap as served) may turn into
    variables: ``data``'s, and a ConfigMap's ``binaryData``'s too, on the safe side."""
    keys = list(_obj(source.get("data")))
    if kind is DataKind.CONFIG_MAP:
        keys += list(_obj(source.get("binaryData")))
    return [str(key) for key in keys]


COPYABLE_SECRET_TYPES: frozenset[str] = frozenset(
    {
        "Opaque",
        "kubernetes.io/basic-auth",
        "kubernetes.io/dockercfg",
        "kubernetes.io/dockerconfigjson",
        "kubernetes.io/ssh-auth",
        "kubernetes.io/tls",
    }
)
"""Secret types copied to members. A ``service-account-token`` Secret would be filled by the
member's token controller with a token of the member's own (an identity the policy denies a
job), and bootstrap tokens join nodes: neither is tenant data."""


def data_errors(
    references: list[Reference], found: Mapping[tuple[DataKind, str], str]
) -> list[FieldError]:
    """A field error for each reference that cannot be copied: a required one whose object is
    not in ``found``, or a Secret of a type that is not copied. ``found`` maps (kind, name) of
    each object that exists to its type (a Secret's ``type``, "" for a ConfigMap)."""
    errors: list[FieldError] = []
    for reference in references:
        key = (reference.kind, reference.name)
        if key not in found:
            if reference.optional:
                continue
            errors.append(
                FieldError(
                    reference.path,
                    f"{reference.kind} {reference.name!r} does not exist in the job's namespace; "
                    "the operator copies it to the member that runs the job, so it must exist "
                    f"on the hub first (kubectl create {reference.kind.lower()} "
                    f"{reference.name} ...), or be marked optional: true",
                )
            )
        elif reference.kind is DataKind.SECRET and (found[key] or "Opaque") not in (
            COPYABLE_SECRET_TYPES
        ):
            errors.append(
                FieldError(
                    reference.path,
                    f"Secret {reference.name!r} is of type {found[key]}, which is not copied to "
                    f"members (copied: {', '.join(sorted(COPYABLE_SECRET_TYPES))})",
                )
            )
    return errors


def unportable_errors(template: Mapping[str, Any]) -> list[FieldError]:
    """What a template holds that cannot be carried to a member (see the module notes)."""
    errors: list[FieldError] = []
    spec = _obj(template.get("spec"))
    for index, raw_volume in enumerate(_items(spec.get("volumes"))):
        if "persistentVolumeClaim" in _obj(raw_volume):
            errors.append(
                FieldError(
                    join_path((*TEMPLATE_PATH, "volumes", index, "persistentVolumeClaim")),
                    "a PersistentVolumeClaim is bound to storage of one cluster and cannot "
                    "follow the job to a member; use a generic ephemeral volume (ephemeral) for "
                    "scratch space, and read data from object storage or a Secret/ConfigMap",
                )
            )
    return errors
