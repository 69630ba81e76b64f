"""Vouchers enforced at admission by the real webhook: exact under concurrency, self-healing."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.kube import Cluster, kubectl
from e2e.tenant import GROUP, VERSION, compute_job, tenant_identity, voucher
from suanli.api.names import FINALIZER, HOLD_ANNOTATION
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for
from suanli.options import OperatorOptions

# The most any test job can cost per GPU-hour: the H100 price of install.DEFAULT_PRICES.
TOP_PRICE = Decimal("28.00")
# The session operator's: the timeout of the webhook configurations it manages.
WEBHOOK_TIMEOUT = OperatorOptions().webhook_timeout


def job(name: str, voucher_name: str, gpus: int = 1, **spec: Any) -> dict[str, Any]:
    # Runs (on kwok) until the test's namespace is deleted, so holds stay held.
    return compute_job(name, voucher_name=voucher_name, gpus=gpus, run_for="1h", **spec)


class Api:
    def __init__(self, hub: Cluster, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(hub.api)
        self.namespace = namespace

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, body
        )
        return result

    def get(self, plural: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name
        )
        return result

    def status(self, voucher_name: str) -> dict[str, Any]:
        return self.get("voucherquotas", voucher_name).get("status") or {}


def refusal(call: Callable[[], Any], status: int = 403) -> str:
    """The API server's message for a create that must be refused with ``status``."""
    with pytest.raises(ApiException) as error:
        call()
    assert error.value.status == status, error.value
    return str(error.value.body)


@pytest.fixture
def api(hub: Cluster, namespace: str, operator: OperatorProcess) -> Api:
    return Api(hub, namespace)


def wait_reserved(api: Api, voucher_name: str, expected: Decimal, what: str) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        status = api.status(voucher_name)
        return status if Decimal(status.get("reserved", "-1")) == expected else None

    result: dict[str, Any] = wait_for(settled, timeout=TIMEOUTS.condition_stable, what=what)
    return result


def test_concurrent_creates_admit_exactly_what_the_voucher_affords(api: Api) -> None:
    # One job: 1 GPU for 1h at the top price = 28.00. The voucher affords 37 and a half.
    estimate = TOP_PRICE
    affordable = 37
    amount = estimate * affordable + estimate / 2
    api.create("voucherquotas", voucher("burst", f"{amount:.2f}"))
    submissions = 120

    def submit(index: int) -> str | None:
        try:
            api.create("computejobs", job(f"job-{index:03d}", "burst"))
        except ApiException as error:
            return str(error.body)
        return None

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(submit, range(submissions)))
    refused = [message for message in outcomes if message is not None]
    assert submissions - len(refused) == affordable
    for message in refused:
        assert "voucher" in message and "burst" in message, message
        assert "short by 14.00 CNY" in message, message
    status = wait_reserved(api, "burst", estimate * affordable, "the reservations to be recorded")
    assert status["activeJobs"] == affordable
    stored = api.custom.list_namespaced_custom_object(GROUP, VERSION, api.namespace, "computejobs")
    assert len(stored["items"]) == affordable


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("expired", "expired"),
        ("too-many-gpus", "allows at most 4 GPUs per job"),
        ("excluded-model", "L40S"),
        ("other-namespace", "does not exist in namespace"),
    ],
)
def test_each_limit_is_refused_with_its_own_message(
    api: Api, hub: Cluster, case: str, expected: str
) -> None:
    limits = {"maxGPUsPerJob": 4}
    api.create(
        "voucherquotas",
        voucher("strict", "100000.00", limits=limits, allowedGPUModels=["H100", "A800"]),
    )
    if case == "expired":
        past = voucher("old", "100000.00")
        past["spec"]["validFrom"] = "2025-01-01T00:00:00Z"
        past["spec"]["validUntil"] = "2025-12-31T00:00:00Z"
        api.create("voucherquotas", past)
        message = refusal(lambda: api.create("computejobs", job("j", "old")))
    elif case == "too-many-gpus":
        message = refusal(lambda: api.create("computejobs", job("j", "strict", gpus=8)))
    elif case == "excluded-model":
        message = refusal(lambda: api.create("computejobs", job("j", "strict", gpuModels=["L40S"])))
    else:
        elsewhere = f"{api.namespace}-other"
        hub.core.create_namespace({"metadata": {"name": elsewhere}})
        try:
            Api(hub, elsewhere).create("voucherquotas", voucher("theirs", "100000.00"))
            message = refusal(lambda: api.create("computejobs", job("j", "theirs")))
        finally:
            hub.core.delete_namespace(elsewhere)
    assert expected in message, message
    status = api.status("strict")
    assert Decimal(status.get("reserved", "0")) == 0


def test_dry_run_reserves_nothing(api: Api) -> None:
    api.create("voucherquotas", voucher("dry", "1000.00"))
    api.custom.create_namespaced_custom_object(
        GROUP, VERSION, api.namespace, "computejobs", job("probe", "dry"), dry_run="All"
    )
    wait_for(
        lambda: "ledger" in api.status("dry"),
        timeout=TIMEOUTS.condition_stable,
        what="the voucher's first status",
    )
    assert Decimal(api.status("dry")["reserved"]) == 0


def test_an_admitted_job_is_stored_with_the_operators_finalizer(api: Api) -> None:
    # The create's answer is the object as the create stored it: the operator cannot have
    # patched it yet, so the finalizer came from the mutating webhook.
    api.create("voucherquotas", voucher("held", "1000.00"))
    created = api.create("computejobs", job("born-held", "held"))
    assert created["metadata"]["finalizers"] == [FINALIZER]


def test_cost_deciding_fields_are_immutable(api: Api) -> None:
    api.create("voucherquotas", voucher("fixed", "1000.00"))
    api.create("computejobs", job("train", "fixed"))
    patch = {"spec": {"gpusPerReplica": 2}}
    with pytest.raises(ApiException) as error:
        api.custom.patch_namespaced_custom_object(
            GROUP, VERSION, api.namespace, "computejobs", "train", patch
        )
    assert "spec.gpusPerReplica: cannot change after admission" in str(error.value.body)
    # Priority only reorders the queue: allowed.
    api.custom.patch_namespaced_custom_object(
        GROUP, VERSION, api.namespace, "computejobs", "train", {"spec": {"priority": 5}}
    )


def test_a_tenant_cannot_modify_its_voucher(api: Api, hub: Cluster) -> None:
    api.create("voucherquotas", voucher("mine", "1000.00"))
    tenant = tenant_identity(hub, api.namespace)
    ns = f"--namespace={api.namespace}"
    assert "mine" in kubectl(hub, tenant, ns, "get", "voucherquotas").stdout
    patched = kubectl(
        hub,
        tenant,
        ns,
        "patch",
        "vq",
        "mine",
        "--type=merge",
        "-p",
        '{"spec":{"amount":"999999.00"}}',
        check=False,
    )
    assert patched.returncode != 0 and "forbidden" in patched.stderr.lower(), patched.stderr
    deleted = kubectl(hub, tenant, ns, "delete", "vq", "mine", check=False)
    assert deleted.returncode != 0 and "forbidden" in deleted.stderr.lower()
    # What the tenant role is for still works: submitting a job.
    kubectl(hub, tenant, ns, "create", "-f", "-", stdin=json.dumps(job("mine-job", "mine")))


def test_webhook_down_refuses_and_recount_restores_the_ledger(
    api: Api, operator: OperatorProcess
) -> None:
    api.create("voucherquotas", voucher("steady", "1000.00"))
    for index in range(3):
        api.create("computejobs", job(f"kept-{index}", "steady"))
    before = wait_reserved(api, "steady", TOP_PRICE * 3, "three holds")["reserved"]

    operator.kill()
    try:
        # An unreachable webhook fails closed: the API server answers 500 and stores nothing.
        message = refusal(
            lambda: api.create("computejobs", job("while-down", "steady")), status=500
        )
        assert "computejob-admission.suanli.io" in message, message
        # A hold whose create never reached etcd (as if the API server failed after admission):
        # the recount must release it and leave the real ones alone.
        voucher_body = api.get("voucherquotas", "steady")
        ledger = voucher_body["status"]["ledger"]
        ledger["entries"].append(
            {
                "uid": "never-stored-0000",
                "job": f"{api.namespace}/never-stored",
                "state": "Reserved",
                "hold": "100.00",
                "gpus": 1,
                "reservedAt": "2026-01-01T00:00:00Z",
            }
        )
        ledger["entries"].sort(key=lambda entry: entry["uid"])
        voucher_body["status"]["reserved"] = f"{TOP_PRICE * 3 + 100:.2f}"
        api.custom.replace_namespaced_custom_object_status(
            GROUP, VERSION, api.namespace, "voucherquotas", "steady", voucher_body
        )
    finally:
        operator.start()
    after = wait_reserved(api, "steady", TOP_PRICE * 3, "the recount to release the leaked hold")
    assert after["reserved"] == before
    jobs = {entry["job"] for entry in after["ledger"]["entries"]}
    assert jobs == {f"{api.namespace}/kept-{index}" for index in range(3)}


def _post_review(operator: OperatorProcess, review: dict[str, Any]) -> dict[str, Any]:
    """POST an AdmissionReview straight to the operator's validating webhook, as a process
    inside the hub's network could, bypassing the API server."""
    context = ssl.create_default_context(cafile=str(operator.workdir / "certs" / "ca.crt"))
    request = urllib.request.Request(
        f"https://127.0.0.1:{operator.webhook_port}/computejob-admission",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_a_review_posted_straight_to_the_webhook_costs_nothing_once_its_time_is_up(
    api: Api, operator: OperatorProcess
) -> None:
    # Affords one job. The forged review carries exactly the hold suanli quotes.
    api.create("voucherquotas", voucher("forged", f"{TOP_PRICE:.2f}"))
    wait_reserved(api, "forged", Decimal(0), "the voucher's status")
    body = job("ghost", "forged")
    hold = json.dumps(
        {"amount": f"{TOP_PRICE:.2f}", "gpus": 1, "voucher": "forged"},
        sort_keys=True,
        separators=(",", ":"),
    )
    body["metadata"].update(
        namespace=api.namespace, uid="forged-0000-0000", annotations={HOLD_ANNOTATION: hold}
    )
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "review-forged",
            "kind": {"group": GROUP, "version": VERSION, "kind": "ComputeJob"},
            "resource": {"group": GROUP, "version": VERSION, "resource": "computejobs"},
            "operation": "CREATE",
            "namespace": api.namespace,
            "name": "ghost",
            "object": body,
            "dryRun": False,
            "userInfo": {"username": "intruder"},
        },
    }
    answer = _post_review(operator, review)
    assert answer["response"]["allowed"] is True, answer
    # The forged hold counts while its job might still be on the way: a real job is refused...
    message = refusal(lambda: api.create("computejobs", job("real", "forged")))
    assert "short by" in message, message
    # ...and it never reaches the voucher's recorded status.
    assert Decimal(api.status("forged").get("reserved", "0")) == 0

    # Once the webhook timeout has passed without a job of that uid, the hold is dropped.
    def admitted() -> bool:
        try:
            api.create("computejobs", job("real", "forged"))
        except ApiException as error:
            assert error.status == 403, error
            return False
        return True

    wait_for(admitted, timeout=WEBHOOK_TIMEOUT + TIMEOUTS.condition_stable, what="the drop")
    status = wait_reserved(api, "forged", TOP_PRICE, "the real job's hold alone")
    assert [entry["job"] for entry in status["ledger"]["entries"]] == [f"{api.namespace}/real"]


def test_nobody_chooses_or_changes_the_hold_a_job_is_admitted_for(api: Api, hub: Cluster) -> None:
    api.create("voucherquotas", voucher("honest", "1000.00"))
    wait_reserved(api, "honest", Decimal(0), "the voucher's status")
    # A hold written by the tenant at create is replaced by suanli's own quote.
    forged = json.dumps({"amount": "0.01", "gpus": 1, "voucher": "honest"})
    body = job("cheap", "honest")
    body["metadata"]["annotations"] = {HOLD_ANNOTATION: forged}
    stored = api.create("computejobs", body)
    held = json.loads(stored["metadata"]["annotations"][HOLD_ANNOTATION])
    assert held == {"amount": f"{TOP_PRICE:.2f}", "gpus": 1, "voucher": "honest"}
    ns = f"--namespace={api.namespace}"
    changes = (
        json.dumps({"metadata": {"annotations": {HOLD_ANNOTATION: forged}}}),
        json.dumps({"metadata": {"annotations": {HOLD_ANNOTATION: None}}}),
    )
    # A tenant may not patch a job at all (its role has no patch)...
    tenant = tenant_identity(hub, api.namespace)
    for change in changes:
        result = kubectl(
            hub, tenant, ns, "patch", "cjob", "cheap", "--type=merge", "-p", change, check=False
        )
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), result.stderr
    # ...and whoever may (an admin here) is refused by the webhook, which names the field.
    for change in changes:
        result = kubectl(
            hub, ns, "patch", "cjob", "cheap", "--type=merge", "-p", change, check=False
        )
        assert result.returncode != 0, result.stdout
        assert f"metadata.annotations[{HOLD_ANNOTATION}]" in result.stderr, result.stderr
        assert "cannot change or be removed" in result.stderr, result.stderr
    kept = api.get("computejobs", "cheap")["metadata"]["annotations"][HOLD_ANNOTATION]
    assert json.loads(kept) == held
