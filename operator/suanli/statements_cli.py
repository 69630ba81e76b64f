"""``suanli statements``: a voucher programme's monthly statements, as CSV or JSON."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config

from suanli.api.kinds import USAGERECORDS
from suanli.api.meta import GROUP, VERSION
from suanli.api.voucherstatement import MONTH_PATTERN
from suanli.errors import UserFacingError
from suanli.vouchers.statements import statements, to_csv, to_json
from suanli.vouchers.usage import month_of


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "statements",
        help="a voucher programme's monthly statements (per company, per center)",
        description="Print a VoucherProgram's statements for one month, computed from the "
        "usage records: the same records always give the same numbers, to the cent.",
    )
    parser.add_argument("program", help="the VoucherProgram's name")
    parser.add_argument(
        "--month",
        default=month_of(datetime.now(UTC)),
        help="the month, YYYY-MM (UTC; default: this month)",
    )
    parser.add_argument("--format", choices=("json", "csv"), default="json")
    parser.add_argument(
        "--by",
        choices=("company", "center"),
        default="company",
        help="with --format csv: one row per company, center and model, or per center",
    )
    parser.add_argument("--kubeconfig", help="the hub's kubeconfig (default: the usual)")
    parser.set_defaults(handler=run_statements)


def run_statements(args: argparse.Namespace) -> int:
    if not re.fullmatch(MONTH_PATTERN, args.month):
        raise UserFacingError(f"--month: {args.month!r} is not YYYY-MM")
    api = config.new_client_from_config(config_file=args.kubeconfig)
    listed: dict[str, Any] = client.CustomObjectsApi(api).list_cluster_custom_object(
        GROUP, VERSION, USAGERECORDS
    )
    result = statements(listed["items"], args.program, args.month)
    print(to_json(result) if args.format == "json" else to_csv(result, args.by), end="")
    return 0
