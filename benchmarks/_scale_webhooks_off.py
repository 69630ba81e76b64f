"""The webhooks-off floor: the same ComputeJobs created with suanli's admission webhooks removed.

Run after the main phase, with the operator stopped by the caller: nothing may dispatch or
charge these jobs, and the validating webhook fails closed while the operator is down. Then:

1. every Validating- and MutatingWebhookConfiguration with a webhook on suanli's API group is
   saved and deleted (``suanli run`` manages its own, named "suanli.io"; a chart may install
   others), and a dry-run create shows when the API server has stopped calling them;
2. the ComputeJobs are created, in namespaces of their own, with the caller's client,
   concurrency and rate (:func:`_scale_submit.send_all`, rated the same way as the main
   phase's creates), then deleted: with the mutating webhook off they carry no finalizer
   (counted, to show it), so they go at once;
3. the configurations are created again as they were saved (only the server-set metadata
   differs), before the caller starts the operator, which then takes them over.

The ratio of the main phase's creates/s to these is what admission itself costs a create.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from _common import log, ms, percentile, wait_until
from _scale_submit import Post, create, rate_of, send_all

from suanli.api.meta import API_VERSION, GROUP
from suanli.members.kubeapi import ApiError, describe_error, request_json

ADMISSION: Final = "/apis/admissionregistration.k8s.io/v1"
CONFIGURATIONS: Final = ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
KEPT_METADATA: Final = ("name", "labels", "annotations")


@dataclass(frozen=True)
class SavedConfiguration:
    collection: str  # one of CONFIGURATIONS
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


def suanli_configurations(hub: Any) -> list[SavedConfiguration]:
    """Every webhook configuration that has a webhook on suanli's API group, as it is now."""
    found = []
    for collection in CONFIGURATIONS:
        listed = request_json(hub, "GET", f"{ADMISSION}/{collection}")
        for item in listed.get("items", []):
            rules = [
                rule for hook in item.get("webhooks") or [] for rule in hook.get("rules") or []
            ]
            if any(GROUP in (rule.get("apiGroups") or []) for rule in rules):
                found.append(SavedConfiguration(collection, copy.deepcopy(item)))
    return found


def restore(hub: Any, saved: SavedConfiguration) -> None:
    """Create ``saved`` again; replace what is there if something re-created it meanwhile."""
    body = copy.deepcopy(saved.body)
    metadata = body["metadata"]
    body["metadata"] = {key: metadata[key] for key in KEPT_METADATA if key in metadata}
    path = f"{ADMISSION}/{saved.collection}"
    try:
        request_json(hub, "POST", path, body=body)
    except ApiError as error:
        if error.status != 409:
            raise
        current = request_json(hub, "GET", f"{path}/{saved.name}")
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        request_json(hub, "PUT", f"{path}/{saved.name}", body=body)
    restored = request_json(hub, "GET", f"{path}/{saved.name}")
    if restored.get("webhooks") != saved.body.get("webhooks"):
        log(f"note: {saved.collection}/{saved.name} restored with different webhooks")


@contextmanager
def webhooks_removed(hub: Any) -> Iterator[list[SavedConfiguration]]:
    """suanli's webhook configurations deleted for the block, and restored after it."""
    saved = suanli_configurations(hub)
    removed: list[SavedConfiguration] = []
    try:
        for configuration in saved:
            request_json(
                hub, "DELETE", f"{ADMISSION}/{configuration.collection}/{configuration.name}"
            )
            removed.append(configuration)
        log(f"webhooks off: removed {', '.join(f'{c.collection}/{c.name}' for c in removed)}")
        yield saved
    finally:
        for configuration in removed:
            try:
                restore(hub, configuration)
            except Exception as error:  # say so loudly: the hub is left without admission
                log(
                    f"COULD NOT RESTORE {configuration.collection}/{configuration.name}: "
                    f"{describe_error(error)}"
                )
        if removed:
            log("webhooks off: webhook configurations restored")


def admission_bypassed(post: Post) -> bool:
    """Whether a dry-run create of ``post`` gets through: with the operator down, it does only
    once the API server no longer calls the (fail-closed) validating webhook."""
    try:
        request_json(post.api, "POST", post.path, query=[("dryRun", "All")], body=post.body)
    except Exception:
        return False
    return True


def measure(
    hub: Any,
    posts: list[Post],
    namespaces: list[str],
    selector: str,
    *,
    rate: float,
    concurrency: int,
) -> dict[str, Any]:
    """Create ``posts`` (ComputeJobs in ``namespaces``, labelled to match ``selector``) with
    the webhooks removed; the figures, keyed ``webhooks_off_*``."""
    for namespace in namespaces:
        create(hub, "/api/v1/namespaces", {"metadata": {"name": namespace}})
    try:
        with webhooks_removed(hub):
            if not wait_until(lambda: admission_bypassed(posts[0]), 60, "the webhooks to be off"):
                return {}
            # The mutating webhook fails open, so the probe cannot show it gone; its
            # configuration went with the validating one's, and the API server's caches of
            # both follow the same watch: a moment more for the slower of the two.
            time.sleep(1.0)
            log(f"webhooks off: creating {len(posts)} ComputeJobs with the webhooks removed")
            sent = send_all(posts, rate, concurrency)
            errors = [s.error for s in sent if s.error]
            if errors:
                log(f"webhooks off: {len(errors)} creates failed, e.g. {errors[0]}")
            finalized = _delete_jobs(hub, namespaces, selector)
    finally:
        for namespace in namespaces:
            try:
                request_json(hub, "DELETE", f"/api/v1/namespaces/{namespace}")
            except Exception as error:
                log(f"could not delete {namespace}: {describe_error(error)}")
    creates = [s.returned - s.started for s in sent]
    return {
        "webhooks_off_created": len(sent) - len(errors),
        "webhooks_off_creates_per_s": round(rate_of(sent), 1),
        "webhooks_off_create_p50_ms": ms(percentile(creates, 0.5)),
        "webhooks_off_create_p99_ms": ms(percentile(creates, 0.99)),
        "webhooks_off_with_finalizer": finalized,
    }


def _delete_jobs(hub: Any, namespaces: list[str], selector: str) -> int:
    """Delete the floor's ComputeJobs and wait until they are gone, before the operator is
    back; the number of them that carried a finalizer (none, with the mutating webhook off)."""
    collection = f"/apis/{API_VERSION}/computejobs"
    query = [("labelSelector", selector)]
    listed = request_json(hub, "GET", collection, query=query)
    finalized = sum(1 for item in listed.get("items", []) if item["metadata"].get("finalizers"))
    for namespace in namespaces:
        path = f"/apis/{API_VERSION}/namespaces/{namespace}/computejobs"
        request_json(hub, "DELETE", path, query=query)

    def gone() -> bool:
        return not request_json(hub, "GET", collection, query=[*query, ("limit", 1)]).get("items")

    wait_until(gone, 120, "the webhooks-off ComputeJobs to be deleted")
    return finalized
