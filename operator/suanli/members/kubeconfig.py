"""What a member's kubeconfig may contain before the operator builds a client from it.

A member kubeconfig comes from a hub Secret that platform admins write, and it describes a
cluster that another organisation runs. The Kubernetes client obeys whatever the kubeconfig
says, and some of what it may say acts inside the operator's own process and file system:

- ``exec`` (a credential plugin) runs a command the kubeconfig names, with the operator's
  environment and service account token in reach; ``auth-provider`` runs the provider's
  command (gcp's ``cmd-path``) or refreshes tokens against a URL and writes them back (oidc).
  Both are refused unless the operator is started with ``--allow-kubeconfig-exec``, for the
  rare federation that needs a cloud's plugin and trusts everyone who may write the Secrets.
- File references (``tokenFile``, ``client-certificate``, ``client-key``,
  ``certificate-authority``) read files of the operator's container: pointed at
  ``/var/run/secrets/kubernetes.io/serviceaccount/token`` and a server of the writer's
  choosing, a kubeconfig would send the operator's hub credentials away. Every one of them has
  an inline ``-data`` (or ``token``) form, so they are refused always, with no flag.

Every user and cluster entry is checked, not only the current context's: the hub kubeconfig
of a member should hold one of each (``suanli member kubeconfig`` writes it so), and a check
that followed the client's choice of context would have to follow its rules exactly.

Pure: text in, refusals out; the dispatcher calls it before it makes a MemberLink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import yaml

EXEC_FLAG: Final = "--allow-kubeconfig-exec"
"""The operator flag that lets ``exec`` and ``auth-provider`` users through."""

PLUGIN_FIELDS: Final = ("exec", "auth-provider")
"""User fields that run code in the operator: refused unless the flag allows them."""
USER_FILE_FIELDS: Final = ("tokenFile", "client-certificate", "client-key")
CLUSTER_FILE_FIELDS: Final = ("certificate-authority",)
INLINE_FORM: Final = {
    "tokenFile": "token",
    "client-certificate": "client-certificate-data",
    "client-key": "client-key-data",
    "certificate-authority": "certificate-authority-data",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """One entry of a kubeconfig the operator will not use, and why."""

    section: str
    """``user`` or ``cluster``."""
    entry: str
    """The entry's name in the kubeconfig."""
    field: str
    """The field that is refused, e.g. ``exec``."""

    @property
    def plugin(self) -> bool:
        """Whether ``--allow-kubeconfig-exec`` would let it through."""
        return self.field in PLUGIN_FIELDS

    def __str__(self) -> str:
        where = f'{self.section} "{self.entry}"'
        if self.field == "exec":
            return f"{where} runs a credential plugin (exec)"
        if self.field == "auth-provider":
            return f"{where} uses an auth-provider plugin"
        return (
            f"{where} reads a file of the operator's ({self.field}); "
            f"inline it as {INLINE_FORM[self.field]}"
        )


def _entries(document: dict[str, Any], section: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, body) of each entry of ``users`` or ``clusters``; malformed ones are skipped
    (the client refuses those itself)."""
    found: list[tuple[str, dict[str, Any]]] = []
    items = document.get(f"{section}s")
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        body = item.get(section)
        if isinstance(body, dict):
            found.append((str(item.get("name") or "<unnamed>"), body))
    return found


def refusals(kubeconfig: str, *, allow_exec: bool = False) -> list[Refusal]:
    """Everything in ``kubeconfig`` (YAML text) the operator refuses to act on.

    Text that is not a YAML mapping yields no refusal: the client's loader reports it as an
    invalid kubeconfig, which is a different condition for the admin to fix.
    """
    try:
        document = yaml.safe_load(kubeconfig)
    except yaml.YAMLError:
        return []
    if not isinstance(document, dict):
        return []
    found: list[Refusal] = []
    for name, user in _entries(document, "user"):
        if not allow_exec:
            found.extend(Refusal("user", name, f) for f in PLUGIN_FIELDS if user.get(f))
        found.extend(Refusal("user", name, f) for f in USER_FILE_FIELDS if user.get(f))
    for name, cluster in _entries(document, "cluster"):
        found.extend(Refusal("cluster", name, f) for f in CLUSTER_FILE_FIELDS if cluster.get(f))
    return found


def refusal_message(found: list[Refusal], source: str) -> str:
    """A condition message for the platform admin: what is refused, and what to do."""
    what = "; ".join(str(refusal) for refusal in found)
    advice = (
        "Store a token kubeconfig instead (on the member: `suanli member access | kubectl "
        "apply -f -`, then `suanli member kubeconfig`)"
    )
    if any(refusal.plugin for refusal in found):
        advice += f", or start the operator with {EXEC_FLAG} if you trust every writer of it"
    return f"The kubeconfig in {source} is refused: {what}. {advice}."
