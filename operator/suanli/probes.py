"""The operator's own small HTTP servers: health probes, and the standby's webhook answer.

``/healthz`` says the process is alive; ``/readyz`` that it serves its role (leader or
standby); ``/admitting`` that it admits right now (the leader, with its ledgers rebuilt), which
is what a local tool waits for before it submits jobs. A replica standing by serves the webhook
port too, so that a review sent to it by mistake (a Service not yet updated after a takeover)
is refused with a message to retry, not left to time out.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp.web

from suanli.admission.gate import AdmissionGate

logger = logging.getLogger(__name__)


async def _start(app: aiohttp.web.Application, host: str, port: int, **site: Any) -> Any:
    runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, host, port, **site).start()
    return runner


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/admitting`` on one port."""

    def __init__(self, host: str, port: int, gate: AdmissionGate) -> None:
        self.host, self.port, self.gate = host, port, gate
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> None:
        app = aiohttp.web.Application()
        app.add_routes(
            [
                aiohttp.web.get("/healthz", self._ok),
                aiohttp.web.get("/readyz", self._ok),
                aiohttp.web.get("/admitting", self._admitting),
            ]
        )
        self._runner = await _start(app, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _ok(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="ok\n")

    async def _admitting(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        if self.gate.is_open:
            return aiohttp.web.Response(text="admitting\n")
        return aiohttp.web.Response(status=503, text=self.gate.refusal + "\n")


def _review_refusal(review: Any, message: str) -> dict[str, Any]:
    request = review.get("request") if isinstance(review, dict) else None
    uid = request.get("uid", "") if isinstance(request, dict) else ""
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": False,
            "status": {"code": 503, "reason": "ServiceUnavailable", "message": message},
        },
    }


class StandbyWebhook:
    """Answers every admission review with a refusal to retry (see the module docs)."""

    def __init__(
        self, host: str, port: int, certfile: Path, keyfile: Path, message: Callable[[], str]
    ) -> None:
        self.host, self.port = host, port
        self.certfile, self.keyfile = certfile, keyfile
        self.message = message
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> None:
        context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.certfile), str(self.keyfile))
        app = aiohttp.web.Application()
        app.add_routes([aiohttp.web.post("/{hook:.*}", self._refuse)])
        # The leader's server (Kopf's) binds with SO_REUSEPORT too: when this process becomes
        # the leader, the two may overlap for a moment.
        self._runner = await _start(
            app, self.host, self.port, ssl_context=context, reuse_port=True, reuse_address=True
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _refuse(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            review = json.loads(await request.read())
        except ValueError:
            return aiohttp.web.Response(status=400, text="not an AdmissionReview\n")
        return aiohttp.web.json_response(_review_refusal(review, self.message()))
