"""Faults injected through a cluster's own admission chain, as a real API server would answer:
an admission policy that refuses some writes, and a webhook of the test's that answers as told
(allow, deny, or hold a request a while)."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client

from suanli.certs import generate_webhook_certificates

Obj = dict[str, Any]
Answer = Callable[[Obj], Obj]
"""An AdmissionReview's request in; the response's fields (``allowed``, ``status``) out."""


def rule(group: str, resource: str, *operations: str, version: str = "v1") -> Obj:
    """A rule of an admission policy or webhook: ``operations`` on ``resource`` of API
    ``group`` at ``version``."""
    return {
        "apiGroups": [group],
        "apiVersions": [version],
        "operations": list(operations),
        "resources": [resource],
    }


@contextlib.contextmanager
def refusing_policy(
    api: client.ApiClient,
    name: str,
    rules: list[Obj],
    message: str,
    match: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """A ValidatingAdmissionPolicy (and its binding) that refuses every request its ``rules``
    and ``match`` (the binding's ``matchResources``) select, saying ``message``, until the block
    ends. It takes effect once the API server has seen it: probe before relying on it."""
    admission = client.AdmissionregistrationV1Api(api)
    admission.create_validating_admission_policy(
        {
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": rules},
                "validations": [{"expression": "false", "message": message}],
            },
        }
    )
    binding: Obj = {"policyName": name, "validationActions": ["Deny"]}
    if match is not None:
        binding["matchResources"] = dict(match)
    admission.create_validating_admission_policy_binding(
        {"metadata": {"name": name}, "spec": binding}
    )
    try:
        yield
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)


class WebhookServer:
    """An HTTPS admission webhook on 127.0.0.1 that answers each review with ``answer``; its
    certificate is signed by a CA of its own (:attr:`ca_bundle`)."""

    def __init__(self, directory: Path, answer: Answer) -> None:
        certificates = generate_webhook_certificates(directory)
        self.ca_bundle = base64.b64encode(certificates.ca_pem).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = review["request"]
                response = {"uid": request["uid"], **answer(request)}
                body = json.dumps(
                    {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": response,
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificates.cert_file, certificates.key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    def url(self, path: str = "/validate") -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}{path}"

    def configuration(
        self, name: str, rules: list[Obj], *, timeout: int = 5, **selectors: Obj
    ) -> Obj:
        """A ValidatingWebhookConfiguration that sends ``rules``' requests here, failing closed;
        ``selectors``: ``namespaceSelector`` and ``objectSelector``."""
        return {
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": f"{name}.e2e.suanli.io",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "timeoutSeconds": timeout,
                    "rules": rules,
                    "clientConfig": {"url": self.url(), "caBundle": self.ca_bundle},
                    **selectors,
                }
            ],
        }

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
