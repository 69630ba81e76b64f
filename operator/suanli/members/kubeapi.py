"""Raw JSON requests to a member's API server through the Kubernetes client's transport.

The generated client's methods validate every body into pydantic models and back; the link
only moves dicts (watch events, lists, the Job it built), so it sends and reads JSON itself
and keeps the client for what it is good at: the kubeconfig (certificates, tokens, exec
plugins, refresh) and the connection pool. Every call has a timeout and no automatic retries:
the caller decides (watches back off, the probe reports, remote operations are retried by
the dispatcher).
"""

from __future__ import annotations

import json
import random
import socket
import ssl
from collections.abc import Iterator, Sequence
from typing import Any, Final

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3 import exceptions as urllib3_errors

from suanli.members.watch import ResourceGoneError, WatchStream

Query = Sequence[tuple[str, str | int | bool]]
Timeout = float | tuple[float, float]

CONNECT_TIMEOUT: Final = 5.0
REQUEST_TIMEOUT: Final = (CONNECT_TIMEOUT, 30.0)
"""(connect, read) for one request: lists, gets, creates, deletes."""
WATCH_TIMEOUT: Final = 60
"""Seconds the server keeps a watch open (jittered by a fifth either way)."""
WATCH_READ_SLACK: Final = 15.0
"""How much longer than that the client waits for a byte before it calls the stream dead."""
PAGE_SIZE: Final = 500
POOL_SIZE: Final = 16


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        text = f"HTTP {status} {reason}" + (f": {message}" if message else "")
        super().__init__(text)

    @classmethod
    def from_response(cls, status: int, http_reason: str | None, body: bytes) -> ApiError:
        """Read the Status object the API server sends with errors (if it sent one)."""
        reason, message = http_reason or "", ""
        try:
            document = json.loads(body)
        except ValueError:
            message = body.decode("utf-8", "replace").strip()[:300]
        else:
            if isinstance(document, dict):
                reason = str(document.get("reason") or reason)
                message = str(document.get("message") or "")
        return cls(status, reason, message)


def load_client(kubeconfig: str, *, pool_size: int = POOL_SIZE) -> Any:
    """An ApiClient for the cluster (current context) of a kubeconfig given as YAML text.

    Raises:
        ValueError: the text is not a usable kubeconfig.
    """
    try:
        document = yaml.safe_load(kubeconfig)
    except yaml.YAMLError as error:
        raise ValueError(f"kubeconfig is not YAML: {error}") from None
    if not isinstance(document, dict):
        raise ValueError("kubeconfig is not a YAML mapping")
    configuration = client.Configuration()
    configuration.retries = False
    configuration.connection_pool_maxsize = pool_size
    try:
        return config.new_client_from_config_dict(
            document, persist_config=False, client_configuration=configuration
        )
    except (config.ConfigException, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"kubeconfig cannot be used: {error}") from None


def request(
    api: Any,
    method: str,
    path: str,
    *,
    query: Query = (),
    body: Any = None,
    timeout: Timeout = REQUEST_TIMEOUT,
    accept: str = "application/json",
    content_type: str = "application/json",
) -> urllib3.BaseHTTPResponse:
    """Send one request; the response is returned unread (stream it or read ``.data``).

    Raises:
        ApiError: the server answered outside 2xx (the body is read and the connection freed).
        urllib3.exceptions.HTTPError, OSError, ApiException: the request did not get through.
    """
    headers = {"Accept": accept}
    if body is not None:
        headers["Content-Type"] = content_type
    serialized = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=list(query) or None,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    method, url, header_params, payload, post_params = serialized
    response: urllib3.BaseHTTPResponse = api.call_api(
        method,
        url,
        header_params=header_params,
        body=payload,
        post_params=post_params,
        _request_timeout=timeout,
    ).response
    if not 200 <= response.status < 300:
        try:
            data = response.data
        finally:
            response.release_conn()
        raise ApiError.from_response(response.status, response.reason, data)
    return response


def request_json(
    api: Any,
    method: str,
    path: str,
    *,
    query: Query = (),
    body: Any = None,
    timeout: Timeout = REQUEST_TIMEOUT,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """Send one request and return the JSON object it answered with."""
    response = request(
        api, method, path, query=query, body=body, timeout=timeout, content_type=content_type
    )
    try:
        data = response.data
    finally:
        response.release_conn()
    document = json.loads(data) if data else {}
    if not isinstance(document, dict):
        raise ValueError(f"{method} {path}: the answer is not a JSON object")
    return document


def _refused_or(error: BaseException) -> str:
    text = str(error)
    return "connection refused" if "refused" in text.lower() else f"cannot connect: {text}"


def _lost(error: BaseException) -> str:
    inner = error.args[1] if len(error.args) > 1 else None
    if isinstance(inner, BaseException):
        detail = describe_error(inner)
        return detail if detail.startswith("connection") else f"connection lost ({detail})"
    return f"connection lost ({error.args[0] if error.args else type(error).__name__})"


# The first entry whose types match describes a transport failure; order matters (subclasses
# first: urllib3's NewConnectionError is a ConnectTimeoutError, and both are OSErrors).
_TRANSPORT: Final[tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Any], ...]] = (
    (urllib3_errors.NameResolutionError, lambda _: "cannot resolve the API server's host name"),
    (urllib3_errors.NewConnectionError, lambda e: _refused_or(e.args[-1] if e.args else e)),
    (urllib3_errors.ConnectTimeoutError, lambda _: "no connection within the timeout"),
    (
        (urllib3_errors.ReadTimeoutError, TimeoutError, socket.timeout),
        lambda _: "no answer within the timeout",
    ),
    ((urllib3_errors.SSLError, ssl.SSLError), lambda e: f"TLS error: {e}"),
    (urllib3_errors.ProtocolError, _lost),
    (ConnectionRefusedError, lambda _: "connection refused"),
    (ConnectionError, lambda e: f"connection lost ({e.strerror or type(e).__name__})"),
)


def _describe_api_exception(error: ApiException) -> str:
    status = getattr(error, "status", 0) or 0
    reason = str(getattr(error, "reason", "") or "").strip()
    if status:
        return f"HTTP {status} {reason}".strip()
    # The client reports TLS failures this way: "SSLError\n<details>".
    detail = reason.splitlines()[-1] if reason else "request failed"
    return f"TLS error: {detail}" if reason.startswith("SSLError") else detail


def describe_error(error: BaseException) -> str:
    """A short, human message for a failed request: for conditions, events and logs."""
    if isinstance(error, urllib3_errors.MaxRetryError) and error.reason is not None:
        return describe_error(error.reason)
    if isinstance(error, ApiError):
        return str(error)
    if isinstance(error, ApiException):
        return _describe_api_exception(error)
    for types, describe in _TRANSPORT:
        if isinstance(error, types):
            return str(describe(error))
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def error_status(error: BaseException) -> int | None:
    """The HTTP status of a failed request, or None if no answer came."""
    if isinstance(error, ApiError):
        return error.status
    if isinstance(error, ApiException):
        return int(getattr(error, "status", 0) or 0) or None
    return None


class _ResponseStream:
    """A watch response, read chunk by chunk as the server flushes events."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def chunks(self) -> Iterator[bytes]:
        yield from self._response.stream(None, decode_content=True)

    def interrupt(self) -> None:
        # shutdown() makes a read blocked in another thread return at once (urllib3 >= 2.3).
        shutdown = getattr(self._response, "shutdown", None)
        if shutdown is not None:
            shutdown()

    def close(self) -> None:
        self._response.close()
        self._response.release_conn()


class KubeSource:
    """List and watch one collection of a member's API (a :class:`~.watch.ResourceSource`).

    Args:
        api: The member's ApiClient.
        kind: The objects' kind (filled into list items, which carry none).
        api_version: Their apiVersion.
        path: The collection, e.g. ``/api/v1/pods`` (all namespaces).
        label_selector: Only objects with these labels.
        watch_timeout: Seconds the server keeps one watch open (jittered).
        page_size: Objects per list page.
    """

    def __init__(
        self,
        api: Any,
        *,
        kind: str,
        api_version: str,
        path: str,
        label_selector: str | None = None,
        watch_timeout: int = WATCH_TIMEOUT,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.kind = kind
        self.api_version = api_version
        self._api = api
        self._path = path
        self._selector: list[tuple[str, str | int | bool]] = (
            [("labelSelector", label_selector)] if label_selector else []
        )
        self._watch_timeout = watch_timeout
        self._page_size = page_size

    def list_page(self, continue_token: str | None) -> dict[str, Any]:
        query: list[tuple[str, str | int | bool]] = [("limit", self._page_size), *self._selector]
        if continue_token:
            query.append(("continue", continue_token))
        try:
            return request_json(self._api, "GET", self._path, query=query)
        except ApiError as error:
            if error.status == 410:
                raise ResourceGoneError(str(error)) from None
            raise

    def open_watch(self, resource_version: str) -> WatchStream:
        seconds = max(1, round(self._watch_timeout * random.uniform(0.8, 1.2)))
        query: list[tuple[str, str | int | bool]] = [
            ("watch", True),
            ("allowWatchBookmarks", True),
            ("timeoutSeconds", seconds),
            *self._selector,
        ]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        try:
            response = request(
                self._api,
                "GET",
                self._path,
                query=query,
                timeout=(CONNECT_TIMEOUT, seconds + WATCH_READ_SLACK),
            )
        except ApiError as error:
            if error.status == 410:
                raise ResourceGoneError(str(error)) from None
            raise
        return _ResponseStream(response)
