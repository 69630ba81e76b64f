"""Kopf's webhook server, with room for the largest admission review the API server sends.

aiohttp refuses request bodies above 1 MiB unless told otherwise, and Kopf builds its aiohttp
application with that default. A ComputeJob may be as large as etcd stores (1.5 MiB by default),
and an UPDATE review carries two copies of it (object and oldObject) plus the envelope: under the
default, such a job could be created but never updated (a finalizer removed, a priority changed)
and so never deleted. The server answers a refused body with 413, which the fail-closed webhook
turns into a refusal of the tenant's or the operator's own request.
"""

from __future__ import annotations

from typing import Final

import aiohttp.web
import kopf

MAX_REVIEW_BYTES: Final = 8 * 1024 * 1024
"""Two copies of an object at the API server's own request-body limit (3 MiB), with room for
the review's envelope."""


class WebhookServer(kopf.WebhookServer):
    """:class:`kopf.WebhookServer` that reads admission reviews of up to
    :data:`MAX_REVIEW_BYTES`."""

    @staticmethod
    async def _serve(fn: kopf.WebhookFn, request: aiohttp.web.Request) -> aiohttp.web.Response:
        # Kopf gives no option for the limit; a clone of the request carries a larger one.
        roomy = request.clone(client_max_size=MAX_REVIEW_BYTES)
        return await kopf.WebhookServer._serve(fn, roomy)
