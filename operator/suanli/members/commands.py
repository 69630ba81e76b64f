"""``suanli member``: what a member cluster's admin runs to let the hub in, with least privilege.

    suanli member access | kubectl --context MEMBER apply -f -
    suanli member kubeconfig --context MEMBER > hub.kubeconfig

The first prints the hub's identity on the member (:mod:`suanli.member_access`); the second
reads the token Secret that identity's controller filled and prints the kubeconfig the hub
stores in its MemberCluster's Secret. ``--token-secret NAME`` on both rotates the token: a new
Secret for the same account, a kubeconfig from it; then delete the old Secret.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from suanli import member_access
from suanli.api.names import SYSTEM_NAMESPACE
from suanli.api.podpolicy import PodSecurityLevel
from suanli.errors import UserFacingError


def register(subparsers: Any) -> None:
    member = subparsers.add_parser(
        "member",
        help="grant the hub least-privilege access to a member cluster",
        description="For a member cluster's admin: the hub's identity on the member, and the "
        "kubeconfig the hub keeps for it. See docs/cluster-admins.md.",
    )
    commands = member.add_subparsers(dest="member_command", required=True, metavar="COMMAND")

    access = commands.add_parser(
        "access",
        help="print the manifest that gives the hub its identity on a member",
        description="Print a ServiceAccount, a ClusterRole with only what the hub does on a "
        "member, its binding, a token Secret and an admission policy that keeps the hub to "
        "suanli-* namespaces with Pod Security enforced. Apply it on the member.",
    )
    _identity_arguments(access)
    access.add_argument(
        "--pod-security-levels",
        default=",".join(level.value for level in PodSecurityLevel),
        help="comma-separated Pod Security levels the hub may give its namespaces "
        "(default %(default)s)",
    )
    access.add_argument(
        "--token-only",
        action="store_true",
        help="print only the token Secret (with --token-secret NAME: a new token, to rotate)",
    )
    access.set_defaults(handler=_access)

    kubeconfig = commands.add_parser(
        "kubeconfig",
        help="print the hub's kubeconfig for a member, from its token Secret",
        description="Read the hub's token Secret on the member (with your own kubeconfig), "
        "wait until the member's token controller filled it, and print a kubeconfig with the "
        "member's server, CA and that token, to store in the hub's Secret.",
    )
    _identity_arguments(kubeconfig)
    kubeconfig.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="your kubeconfig for the member (default: $KUBECONFIG, else ~/.kube/config)",
    )
    kubeconfig.add_argument("--context", default=None, help="its context for the member")
    kubeconfig.add_argument(
        "--server",
        default=None,
        help="the member's API server URL as the hub reaches it (default: your kubeconfig's)",
    )
    kubeconfig.add_argument(
        "--name", default="suanli-member", help="cluster and context name in the kubeconfig"
    )
    kubeconfig.add_argument(
        "--timeout",
        type=float,
        default=member_access.DEFAULT_TOKEN_TIMEOUT,
        help="seconds to wait for the token (default %(default)s)",
    )
    kubeconfig.set_defaults(handler=_kubeconfig)


def _identity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        default=SYSTEM_NAMESPACE,
        help="namespace of the hub's ServiceAccount (default %(default)s)",
    )
    parser.add_argument(
        "--service-account",
        default=member_access.ACCOUNT,
        help="the hub's ServiceAccount (default %(default)s)",
    )
    parser.add_argument(
        "--token-secret",
        default=member_access.TOKEN_SECRET,
        help="its token Secret (default %(default)s)",
    )


def _spec(args: argparse.Namespace) -> member_access.AccessSpec:
    levels: tuple[PodSecurityLevel, ...] = tuple(PodSecurityLevel)
    if getattr(args, "pod_security_levels", None):
        try:
            levels = tuple(
                PodSecurityLevel(level.strip()) for level in args.pod_security_levels.split(",")
            )
        except ValueError as error:
            choices = ", ".join(level.value for level in PodSecurityLevel)
            raise UserFacingError(
                f"--pod-security-levels: {error}; choose from {choices}"
            ) from None
    return member_access.AccessSpec(
        namespace=args.namespace,
        account=args.service_account,
        token_secret=args.token_secret,
        levels=levels,
    )


def _access(args: argparse.Namespace) -> int:
    spec = _spec(args)
    objects = (
        [member_access.token_secret(spec)] if args.token_only else member_access.manifest(spec)
    )
    sys.stdout.write(member_access.render(objects))
    return 0


def _kubeconfig(args: argparse.Namespace) -> int:
    from kubernetes import config  # noqa: PLC0415 (slow to import; this command only)

    spec = _spec(args)
    try:
        api = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    except (config.ConfigException, OSError) as error:
        raise UserFacingError(f"cannot use your kubeconfig: {error}") from None
    with api:
        try:
            token, ca_pem = member_access.read_token(api, spec, timeout=args.timeout)
        except TimeoutError as error:
            raise UserFacingError(str(error)) from None
        server = args.server or api.configuration.host
    sys.stdout.write(
        member_access.hub_kubeconfig(server=server, ca_pem=ca_pem, token=token, name=args.name)
    )
    return 0
