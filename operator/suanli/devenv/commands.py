"""``suanli dev ...``: the local federation for demos, development and the e2e tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from suanli.devenv import federation, install, kind_install
from suanli.devenv.docker_engine import ensure_engine, find_engine, stop_engine_if_started_here
from suanli.devenv.exporters import start_exporters, stop_exporters
from suanli.devenv.host_packages import ensure_kind_packages
from suanli.devenv.kindnode.images import ensure_node_image
from suanli.devenv.operator_process import OperatorProcess, stop_detached
from suanli.devenv.providers import public_images
from suanli.devenv.toolchain import (
    COMPONENTS,
    KIND_COMPONENTS,
    Toolchain,
    ensure_toolchain,
    toolchain_paths,
)
from suanli.devenv.topology import (
    DEFAULT_MEMBER_COUNT,
    FederationSpec,
    default_federation,
    load_federation,
)
from suanli.kits.waiting import TIMEOUTS


def register(subparsers: Any) -> None:
    dev = subparsers.add_parser(
        "dev",
        help="run a local federation (hub + member clusters) on this machine",
        description="A local federation of real control planes with simulated GPU nodes.",
    )
    commands = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")

    up = commands.add_parser(
        "up",
        help="build the toolchain if needed, then start the hub and members",
        description=(
            "Start a hub and member clusters as local processes (kwok provider) or in Docker "
            "(kind provider), with GPU nodes, and print where their kubeconfigs are. "
            "Running it again keeps what is already up."
        ),
    )
    _add_name(up)
    up.add_argument(
        "--members",
        type=int,
        default=DEFAULT_MEMBER_COUNT,
        help="built-in members to start (1-3; default %(default)s, member-c is the Ascend one)",
    )
    up.add_argument("--config", type=Path, help="YAML federation layout (overrides --members)")
    up.add_argument(
        "--provider",
        choices=("kwok", "kind"),
        default="kwok",
        help=(
            "kwok: local processes, no container engine (default); kind: clusters in Docker "
            "(started here when none runs) with suanli installed by its Helm charts"
        ),
    )
    up.add_argument(
        "--no-operator",
        action="store_true",
        help="only the clusters: no CRDs, operator or examples",
    )
    up.set_defaults(handler=_up)

    down = commands.add_parser(
        "down",
        help="stop every process of the federation (kind: its clusters, and the Docker engine "
        "if suanli started it and no other kind federation uses it)",
    )
    _add_name(down)
    down.set_defaults(handler=_down)

    status = commands.add_parser("status", help="show clusters, kubeconfigs and memory use")
    _add_name(status)
    status.set_defaults(handler=_status)

    toolchain = commands.add_parser(
        "toolchain",
        help="build (or reuse) etcd, Kubernetes and kwok (what `dev up` runs) and helm and "
        "promtool (what the tests use) from their Go modules",
    )
    toolchain.add_argument("--print-path", action="store_true", help="print the PATH entries")
    toolchain.add_argument(
        "--kind",
        action="store_true",
        help="also build the kind provider's parts: kind, kubelet, kubeadm, kube-proxy, CoreDNS "
        "and local-path-provisioner",
    )
    toolchain.add_argument(
        "--kind-images",
        action="store_true",
        help="and build the kind node image and suanli's image (starts Docker's engine if none "
        "runs; implies --kind)",
    )
    toolchain.set_defaults(handler=_toolchain)


def _add_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name",
        default=federation.DEFAULT_NAME,
        help=f"federation name; several can run side by side (default {federation.DEFAULT_NAME})",
    )


def _say(message: str) -> None:
    print(f"[suanli dev] {message}", file=sys.stderr, flush=True)


def _up(args: argparse.Namespace) -> int:
    spec = load_federation(args.config) if args.config else default_federation(args.members)
    kind = args.provider == "kind"
    if kind:
        ensure_kind_packages(_say)
    toolchain = ensure_toolchain(kind=kind)
    state = federation.up(spec, toolchain, name=args.name, provider_name=args.provider, log=_say)
    if not args.no_operator:
        if kind:
            _install_suanli_in_kind(state, toolchain)
        else:
            _start_suanli(state, spec)
    _print_state(state)
    return 0


def _install_suanli_in_kind(state: federation.FederationState, toolchain: Toolchain) -> None:
    """The charts on the kind clusters: the operator and exporters run as pods."""
    engine = ensure_engine(_say)
    kind_install.install_suanli(state, toolchain, engine, _say)
    examples = install.examples_dir()
    if examples is not None:
        with federation.api_client(state.hub.kubeconfig) as hub:
            applied = install.apply_examples(hub, examples)
        _say(f"examples applied: {', '.join(applied)}")


def _start_suanli(state: federation.FederationState, spec: FederationSpec) -> None:
    """Install suanli on the hub, start the operator, join the members, start a stand-in
    exporter per GPU and NPU node, apply the examples.

    The operator starts before anything is written through its webhooks, which fail closed:
    after an operator died, its webhook configurations still name the dead process, and every
    MemberCluster, VoucherQuota or ComputeJob write would be refused until a new one runs.
    """
    hub = federation.api_client(state.hub.kubeconfig)
    install.install_api(hub)
    workdir = Path(state.directory) / "operator"
    if stop_detached(workdir):  # `up` again restarts it with the current code
        _say("stopped the running operator, to start it with the current code")
    operator = OperatorProcess(state.hub.kubeconfig, workdir, detached=True)
    operator.start()
    operator.wait_webhooks(hub, timeout=TIMEOUTS.api_ready)
    pid = operator.process.pid if operator.process else "?"
    _say(f"operator running (pid {pid}); log: {operator.log_path}")
    install.join_members(hub, state.members)
    _say(f"CRDs and roles installed; members joined: {', '.join(m.name for m in state.members)}")
    endpoints = start_exporters(spec.members, Path(state.directory) / "exporters")
    install.set_telemetry_endpoints(hub, endpoints)
    _say(
        f"stand-in exporters running for {sum(map(len, endpoints.values()))} GPU/NPU nodes; "
        "placements are judged with their live telemetry"
    )
    examples = install.examples_dir()
    if examples is not None:
        applied = install.apply_examples(hub, examples)
        _say(f"examples applied: {', '.join(applied)}")


def _down(args: argparse.Namespace) -> int:
    if stop_detached(federation.federation_dir(args.name) / "operator"):
        _say("operator stopped")
    stopped = stop_exporters(federation.federation_dir(args.name) / "exporters")
    if stopped:
        _say(f"{stopped} stand-in exporters stopped")
    federation.down(args.name, log=_say)
    return 0


def _status(args: argparse.Namespace) -> int:
    state = federation.load_state(args.name)
    if state is None:
        _say(f"federation {args.name!r} is not up; start it with `suanli dev up`")
        return 1
    _print_state(state)
    memory = federation.resident_memory_bytes(state, toolchain_paths())
    for cluster, used in memory.items():
        print(f"{cluster:<12} resident memory {used / 2**20:8.1f} MiB")
    print(f"{'total':<12} resident memory {sum(memory.values()) / 2**20:8.1f} MiB")
    return 0


def _print_state(state: federation.FederationState) -> None:
    print(f"federation {state.name} ({state.provider})")
    for cluster in state.clusters:
        gpus = ", ".join(f"{count} {model}" for model, count in cluster.gpus.items()) or "no GPUs"
        print(f"  {cluster.name:<10} {cluster.role:<6} {cluster.region:<18} {gpus}")
        print(f"  {'':<10} KUBECONFIG={cluster.kubeconfig}")
    bin_dir = toolchain_paths().kubectl.parent
    print(f"\nUse the built kubectl: export PATH={bin_dir}:$PATH")
    print(f"Then e.g.: kubectl --kubeconfig {state.hub.kubeconfig} get nodes")


def _toolchain(args: argparse.Namespace) -> int:
    kind = args.kind or args.kind_images
    if args.kind_images:
        ensure_kind_packages(_say)
    tools = ensure_toolchain(kind=kind, tests=True)
    if args.kind_images:
        _build_kind_images()
    if args.print_path:
        print(":".join(str(d) for d in tools.bin_dirs))
    else:
        listed = COMPONENTS + tuple(c for c in KIND_COMPONENTS if kind and c not in COMPONENTS)
        for component in listed:
            for binary in component.binaries:
                print(f"{binary:<24} {component.version:<9} {component.path(binary)}")
    return 0


def _build_kind_images() -> None:
    """The node image and suanli's images, into the engine (which stays as it was found)."""
    was_running = find_engine() is not None
    engine = ensure_engine(_say)
    try:
        if not public_images():
            ensure_node_image(engine, _say)
        kind_install.build_images(engine, _say)
    finally:
        if not was_running and not federation.kind_federations():
            stop_engine_if_started_here(_say)
