"""``suanli exporter``: serve this node's GPU metrics for Prometheus and the suanli hub."""

from __future__ import annotations

import argparse
import os
import socket

from suanli.telemetry.exporter import ExporterConfig, run_exporter
from suanli.telemetry.names import DEFAULT_PORT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``exporter`` sub-command."""
    parser = subparsers.add_parser(
        "exporter",
        help="serve this node's GPU metrics (dcgm-exporter names) read through NVML",
        description=(
            "Serve per-GPU metrics with dcgm-exporter's names and labels at /metrics, read"
            " through NVML at scrape time, plus /healthz for a liveness probe."
        ),
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 in a cluster (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--hostname",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        help="value of the Hostname label: the node name (default: $NODE_NAME or the host name)",
    )
    parser.add_argument(
        "--cache-seconds",
        type=_non_negative,
        default=1.0,
        help="reuse an NVML reading younger than this for further scrapes (default: %(default)s)",
    )
    parser.add_argument(
        "--read-timeout",
        type=_positive,
        default=2.0,
        help="longest a scrape waits for NVML before serving the previous reading"
        " (default: %(default)s)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    return run_exporter(
        ExporterConfig(
            host=args.host,
            port=args.port,
            hostname=args.hostname,
            cache_seconds=args.cache_seconds,
            read_timeout=args.read_timeout,
        )
    )


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value
