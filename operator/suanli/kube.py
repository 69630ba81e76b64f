"""The operator's own calls to the hub's API: custom objects and Events, awaited off the loop.

Kopf drives watches and admission; for the writes that need precise control (status updates
with a resourceVersion precondition, Events with our reasons) the operator uses the official
client. That client blocks, so every call runs in a worker thread and is awaited, keeping the
event loop (and so the webhook server) responsive.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Final

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from suanli.api.meta import GROUP, VERSION

logger = logging.getLogger(__name__)

COMPONENT: Final = "suanli-operator"


class ConflictError(Exception):
    """The object changed since it was read (HTTP 409 on a resourceVersion precondition)."""


class NotFoundError(Exception):
    """The object does not exist (HTTP 404)."""


def load_api_client(kubeconfig: str | None) -> client.ApiClient:
    """A client from a kubeconfig file, or from the pod's service account when None."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


def _translate(error: ApiException) -> Exception:
    if error.status == 409:
        return ConflictError(str(error.reason))
    if error.status == 404:
        return NotFoundError(str(error.reason))
    translated: Exception = error
    return translated


class Hub:
    """Typed, awaitable access to suanli's objects and Events on the hub."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    async def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        def call() -> Any:
            if namespace is None:
                return self._custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
            return self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )

        try:
            result: dict[str, Any] = await asyncio.to_thread(call)
        except ApiException as error:
            raise _translate(error) from error
        return result

    async def list(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        def call() -> Any:
            if namespace is None:
                return self._custom.list_cluster_custom_object(GROUP, VERSION, plural)
            return self._custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)

        result = await asyncio.to_thread(call)
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def replace_status(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Write the status subresource; ``body.metadata.resourceVersion`` is a precondition.

        Raises:
            ConflictError: someone else wrote the object since ``body`` was read.
        """
        metadata = body["metadata"]

        def call() -> Any:
            return self._custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, metadata["namespace"], plural, metadata["name"], body
            )

        try:
            result: dict[str, Any] = await asyncio.to_thread(call)
        except ApiException as error:
            raise _translate(error) from error
        return result

    async def patch_status(
        self, plural: str, namespace: str | None, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch of the status (no precondition: for fields we alone write)."""

        def call() -> Any:
            if namespace is None:
                return self._custom.patch_cluster_custom_object_status(
                    GROUP, VERSION, plural, name, patch
                )
            return self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, patch
            )

        try:
            result: dict[str, Any] = await asyncio.to_thread(call)
        except ApiException as error:
            raise _translate(error) from error
        return result

    async def secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, decoded to text."""
        try:
            secret = await asyncio.to_thread(self._core.read_namespaced_secret, name, namespace)
        except ApiException as error:
            raise _translate(error) from error
        return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}

    async def event(
        self,
        regarding: Mapping[str, Any],
        *,
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        """Record an Event on ``regarding`` for ``kubectl describe``; failures are only logged.

        An Event is a courtesy to the reader: losing one must never fail the operation that
        caused it.
        """
        metadata = regarding["metadata"]
        namespace = metadata.get("namespace") or "default"
        now = datetime.datetime.now(datetime.UTC)
        body = {
            "metadata": {
                "name": f"{metadata['name']}.{uuid.uuid4().hex[:12]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": regarding.get("apiVersion"),
                "kind": regarding.get("kind"),
                "name": metadata["name"],
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
            "reportingComponent": COMPONENT,
        }
        try:
            await asyncio.to_thread(self._core.create_namespaced_event, namespace, body)
        except Exception:
            logger.warning("could not record event %s on %s", reason, metadata["name"])
