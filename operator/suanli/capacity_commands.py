"""``suanli capacity``: how much of the federation is schedulable now, in PFLOPS and devices.

    suanli capacity [--kubeconfig HUB] [--context CTX] [--json]

Reads the MemberClusters on the hub (any identity allowed to list them) and adds up what their
statuses say (:mod:`suanli.dispatch.pflops`): per member its total, schedulable and free dense
FP16 PFLOPS and devices, then the federation's sums. Schedulable and free count only members
that are Ready: a member that takes no jobs schedules nothing, however many devices it has.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from suanli.api.catalogue import format_pflops
from suanli.api.kinds import MEMBERCLUSTERS
from suanli.api.meta import GROUP, VERSION
from suanli.dispatch.pflops import FederationSummary, federation_summary
from suanli.errors import UserFacingError


def register(subparsers: Any) -> None:
    capacity = subparsers.add_parser(
        "capacity",
        help="the federation's capacity in PFLOPS (FP16): total, schedulable, free",
        description="Sum the MemberClusters' status on the hub: dense FP16 PFLOPS and devices, "
        "per member and for the whole federation. See docs/accelerators.md.",
    )
    capacity.add_argument(
        "--kubeconfig", default=None, help="kubeconfig for the hub (default: $KUBECONFIG)"
    )
    capacity.add_argument("--context", default=None, help="its context for the hub")
    capacity.add_argument("--json", action="store_true", help="print JSON instead of a table")
    capacity.set_defaults(handler=_capacity)


def _capacity(args: argparse.Namespace) -> int:
    from kubernetes import client, config  # noqa: PLC0415 (slow to import; this command only)

    try:
        api = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    except (config.ConfigException, OSError) as error:
        raise UserFacingError(f"cannot use your kubeconfig: {error}") from None
    with api:
        try:
            listed = client.CustomObjectsApi(api).list_cluster_custom_object(
                GROUP, VERSION, MEMBERCLUSTERS
            )
        except client.ApiException as error:
            raise UserFacingError(
                f"cannot list MemberClusters on the hub: {error.status} {error.reason}"
            ) from None
    summary = federation_summary(listed.get("items") or [])
    sys.stdout.write(render_json(summary) if args.json else render_table(summary))
    return 0


def render_table(summary: FederationSummary) -> str:
    """A table for people: one row per member, then the federation's sums."""
    header = ("MEMBER", "READY", "TOTAL-PFLOPS", "SCHEDULABLE-PFLOPS", "FREE-PFLOPS", "DEVICES")
    rows = [
        (
            m.name,
            "True" if m.ready else "False",
            format_pflops(m.total),
            format_pflops(m.schedulable),
            format_pflops(m.free),
            f"{m.free_devices}/{m.devices} free",
        )
        for m in summary.members
    ]
    rows.append(
        (
            "FEDERATION",
            f"{sum(m.ready for m in summary.members)}/{len(summary.members)}",
            format_pflops(summary.total),
            format_pflops(summary.schedulable),
            format_pflops(summary.free),
            f"{sum(m.free_devices for m in summary.members if m.ready)}/"
            f"{sum(m.devices for m in summary.members)} free",
        )
    )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in (header, *rows)
    ]
    closing = (
        f"\n{format_pflops(summary.schedulable)} of {format_pflops(summary.total)} PFLOPS (FP16) "
        f"schedulable now; {format_pflops(summary.free)} free.\n"
    )
    return "\n".join(line.rstrip() for line in lines) + "\n" + closing


def render_json(summary: FederationSummary) -> str:
    members = [
        {
            "name": m.name,
            "ready": m.ready,
            "totalPFLOPS": format_pflops(m.total),
            "schedulablePFLOPS": format_pflops(m.schedulable),
            "freePFLOPS": format_pflops(m.free),
            "devices": m.devices,
            "freeDevices": m.free_devices,
        }
        for m in summary.members
    ]
    document = {
        "members": members,
        "totalPFLOPS": format_pflops(summary.total),
        "schedulablePFLOPS": format_pflops(summary.schedulable),
        "freePFLOPS": format_pflops(summary.free),
    }
    return json.dumps(document, indent=2) + "\n"
