"""Failures said as sentences: what the CLI prints instead of a traceback.

Every `suanli` command ends a failure with one line on stderr that says what went wrong and,
where it can, what to do. A :class:`~suanli.errors.UserFacingError` is already written for the
person at the terminal; the rest (the API server refused a request, a server did not answer, a
wait ran out) are explained here from what the exception carries. Anything else is a bug: the
line says so and how to get the traceback (``--verbose``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any, Final

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from suanli.errors import UserFacingError
from suanli.kits.waiting import WaitTimeoutError

EXIT_FAILURE: Final = 2


def api_message(error: ApiException) -> str:
    """The Status message the API server sent (e.g. a webhook's refusal), else its reason."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(error.reason or "no reason given")


def _api_refusal(error: ApiException) -> str:
    answer = f"{error.status} ({error.reason})"
    return f"the Kubernetes API server answered {answer}: {api_message(error)}"


def _unreachable(error: BaseException) -> str:
    return (
        f"a server did not answer ({error}); check that the cluster is up "
        "(`suanli dev status` for a local federation) and that the kubeconfig names it"
    )


def _os_error(error: OSError) -> str:
    return f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")


def _command_failed(error: subprocess.CalledProcessError) -> str:
    return f"`{' '.join(map(str, error.cmd))}` failed with exit status {error.returncode}"


def _bad_kubeconfig(error: ConfigException) -> str:
    return f"the kubeconfig cannot be used: {error}; pass --kubeconfig or set KUBECONFIG"


# Checked in order: the first type that matches explains the error. Connection failures come
# before OSError, which they subclass.
_EXPLANATIONS: Final[tuple[tuple[tuple[type[BaseException], ...], Callable[[Any], str]], ...]] = (
    ((UserFacingError, WaitTimeoutError), str),
    ((ApiException,), _api_refusal),
    ((ConfigException,), _bad_kubeconfig),
    ((urllib3.exceptions.HTTPError, ConnectionError), _unreachable),
    ((subprocess.CalledProcessError,), _command_failed),
    ((OSError,), _os_error),
)


def explain(error: BaseException) -> str:
    """One line for the person at the terminal: what failed, and what to do where we know."""
    for types, say in _EXPLANATIONS:
        if isinstance(error, types):
            return say(error)
    return (
        f"unexpected {type(error).__name__}: {error}. This is a bug in suanli: run the command "
        "again with --verbose for the traceback, and report it."
    )
