"""The operator's view of every VoucherQuota: fed by the watch and by its own writes.

Admission reads vouchers from here instead of asking the API server on every request, and a
voucher is parsed (spec model, ledger) once per resourceVersion, however many requests read
it. A cached voucher may lag the API server by a watch event; that is safe because holds are
decided against the leader's ledger in memory (:mod:`suanli.vouchers.book`), never against
the cached status, and spec limits checked from a copy one event old are the same limits an
admission a moment earlier would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.ledger import Ledger, VoucherTerms

Key = tuple[str, str]


def _version(body: dict[str, Any]) -> int:
    # resourceVersion is opaque by contract, but etcd-backed servers hand out increasing
    # integers; anything else is treated as newest so a fresh read always wins.
    text = str(body.get("metadata", {}).get("resourceVersion", ""))
    return int(text) if text.isdigit() else 1 << 62


def _same_version(one: dict[str, Any], other: dict[str, Any]) -> bool:
    version = one.get("metadata", {}).get("resourceVersion")
    return bool(version) and version == other.get("metadata", {}).get("resourceVersion")


@dataclass(frozen=True)
class ParsedVoucher:
    body: dict[str, Any]
    voucher: VoucherQuota  # spec and metadata; status is left out (the ledger has it)
    ledger: Ledger


def parse_voucher(body: dict[str, Any]) -> ParsedVoucher:
    """The voucher's spec as a model and its ledger, without validating the whole status."""
    voucher = VoucherQuota.model_validate({**body, "status": {}})
    status = body.get("status") or {}
    ledger = Ledger.from_dict(VoucherTerms.from_voucher(voucher), status.get("ledger"))
    return ParsedVoucher(body, voucher, ledger)


@dataclass
class VoucherCache:
    _bodies: dict[Key, dict[str, Any]] = field(default_factory=dict)
    _parsed: dict[Key, ParsedVoucher] = field(default_factory=dict)

    @staticmethod
    def key(body: dict[str, Any]) -> Key:
        metadata = body["metadata"]
        return metadata["namespace"], metadata["name"]

    def put(self, body: dict[str, Any]) -> None:
        """Remember ``body`` unless the same or a newer version of the voucher is known.

        The same version comes twice for every write of ours (our write's answer, then the
        watch's event); keeping the first keeps its parsed ledger too.
        """
        key = self.key(body)
        known = self._bodies.get(key)
        if known is not None and _same_version(body, known):
            return
        if known is None or _version(body) >= _version(known):
            self._bodies[key] = body

    def forget(self, namespace: str, name: str) -> None:
        self._bodies.pop((namespace, name), None)
        self._parsed.pop((namespace, name), None)

    def get(self, namespace: str, name: str) -> ParsedVoucher | None:
        body = self._bodies.get((namespace, name))
        if body is None:
            return None
        parsed = self._parsed.get((namespace, name))
        if parsed is None or parsed.body is not body:
            parsed = parse_voucher(body)
            self._parsed[(namespace, name)] = parsed
        return parsed

    def in_namespace(self, namespace: str) -> list[ParsedVoucher]:
        found = [self.get(ns, name) for ns, name in list(self._bodies) if ns == namespace]
        return [parsed for parsed in found if parsed is not None]
