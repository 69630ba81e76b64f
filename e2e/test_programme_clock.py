"""Voucher programmes on the clock, on real control planes: a start-up's first months end and
its voucher follows the next rule by itself, a job admitted before is still charged under its
own rule; a programme turns Expired at its period's end with nothing else happening; a voucher
is not withdrawn while a job still holds on it.

Every job costs at most 28.00 CNY (1 GPU for 1h at the H100 price of install.DEFAULT_PRICES).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from e2e.kube import Cluster
from e2e.tenant import GROUP, VERSION, compute_job
from e2e.test_programmes import VOUCHER, Hub, wait_vouchers
from suanli.api.names import HOLD_ANNOTATION as HOLD
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for

SWITCH_IN = timedelta(seconds=20)
"""How far ahead the tests put the moment the clock changes something."""
CLOCK_SLACK = 30.0
"""Seconds after that moment the operator has to act on it."""


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _programme(
    name: str, tag: str, end: datetime, members: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VoucherProgram",
        "metadata": {"name": name},
        "spec": {
            "period": {"start": _time(datetime.now(UTC) - timedelta(days=400)), "end": _time(end)},
            "pool": "500.00",
            "creditLine": "100.00",
            "namespaceSelector": {"matchLabels": {"suanli.io/e2e-clock": tag}},
            "memberSelector": {"matchLabels": members or {}},
            "rules": [
                {
                    "name": "startup",
                    "companyClass": "startup",
                    "sharePercent": 100,
                    "companyCap": "200.00",
                    "months": 12,
                },
                {"name": "city-30", "sharePercent": 30, "companyCap": "200.00"},
            ],
        },
    }


class Clocked:
    """One programme and its namespaces, deleted at the end."""

    def __init__(self, api: Hub) -> None:
        self.api = api
        self.tag = uuid.uuid4().hex[:6]
        self.name = f"clock-{self.tag}"
        self.namespaces: list[str] = []

    def create(self, end: datetime, members: dict[str, str] | None = None) -> None:
        self.api.custom.create_cluster_custom_object(
            GROUP, VERSION, "voucherprograms", _programme(self.name, self.tag, end, members)
        )

    def company(self, company: str, annotations: dict[str, str] | None = None) -> str:
        name = f"c-{uuid.uuid4().hex[:10]}"
        labels = {
            "suanli.io/e2e-clock": self.tag,
            "suanli.io/company": f"{company}-{self.tag}",
            "suanli.io/company-class": "startup",
        }
        self.api.core.create_namespace(
            {"metadata": {"name": name, "labels": labels, "annotations": annotations or {}}}
        )
        self.namespaces.append(name)
        return name

    def voucher(self, namespace: str) -> dict[str, Any] | None:
        return self.api.get(namespace, "voucherquotas", VOUCHER.format(self.name))

    def submit(self, namespace: str, job: str, run_for: str) -> dict[str, Any]:
        body = compute_job(job, voucher_name=VOUCHER.format(self.name), run_for=run_for)
        created: dict[str, Any] = self.api.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "computejobs", body
        )
        return created

    def quoted_share(self, namespace: str, job: str, cluster: str) -> Decimal | None:
        """The programme's part of the hold suanli quotes for a job placed on ``cluster``
        (a dry run: nothing is stored or held); None when the quote changed between the two
        webhooks (the member changed under the request, which is refused to be retried)."""
        body = compute_job(
            job,
            voucher_name=VOUCHER.format(self.name),
            run_for="2s",
            placement={"clusters": [cluster]},
        )
        try:
            shown = self.api.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "computejobs", body, dry_run="All"
            )
        except ApiException as error:
            if error.status == 409:
                return None
            raise
        return Decimal(json.loads(shown["metadata"]["annotations"][HOLD])["program"]["share"])

    def record(self, namespace: str, job: str) -> dict[str, Any] | None:
        found = [
            r for r in self.api.list(namespace, "usagerecords") if r["spec"]["job"]["name"] == job
        ]
        return found[0] if found else None

    def cleanup(self) -> None:
        for namespace in self.namespaces:
            self.api.core.delete_namespace(namespace, propagation_policy="Background")
        self.api.custom.delete_cluster_custom_object(GROUP, VERSION, "voucherprograms", self.name)


@pytest.fixture
def clocked(hub: Cluster, operator: OperatorProcess) -> Iterator[Clocked]:
    world = Clocked(Hub(hub))
    try:
        yield world
    finally:
        world.cleanup()


def _rule(clocked: Clocked, namespace: str) -> str | None:
    voucher = clocked.voucher(namespace)
    return voucher["spec"]["program"]["rule"] if voucher is not None else None


def test_a_start_up_s_voucher_moves_to_the_next_rule_when_its_months_pass_by_the_clock_alone(
    clocked: Clocked,
) -> None:
    clocked.create(datetime.now(UTC) + timedelta(days=30))
    # Enrolled a year ago, less SWITCH_IN: its 12 start-up months end in SWITCH_IN.
    switch = datetime.now(UTC) + SWITCH_IN
    enrolled = switch.replace(year=switch.year - 1)
    namespace = clocked.company("cub", {"suanli.io/enrolled-at": _time(enrolled)})
    wait_vouchers(clocked.api, clocked.name, [namespace])
    assert _rule(clocked, namespace) == "startup"
    # Admitted under the start-up rule, still running when the rule changes.
    before = clocked.submit(namespace, "before", run_for=f"{SWITCH_IN.seconds + 25}s")
    assert '"rule":"startup"' in before["metadata"]["annotations"]["suanli.io/hold"]

    wait_for(
        lambda: _rule(clocked, namespace) == "city-30",
        timeout=SWITCH_IN.seconds + CLOCK_SLACK,
        what="the voucher to follow the next rule once the start-up months passed",
    )
    # Nothing else happened meanwhile (the job still runs): the clock alone moved it.
    assert clocked.record(namespace, "before") is None
    voucher = clocked.voucher(namespace)
    assert voucher is not None
    assert voucher["spec"]["program"]["sharePercent"] == 30
    after = clocked.submit(namespace, "after", run_for="2s")
    assert '"rule":"city-30"' in after["metadata"]["annotations"]["suanli.io/hold"]

    records = {
        job: wait_for(
            lambda job=job: clocked.record(namespace, job),
            timeout=TIMEOUTS.job_complete,
            what=f"{job}'s usage record",
        )
        for job in ("before", "after")
    }
    # The job admitted as a start-up is charged as one, whenever its charge is made.
    early = records["before"]["spec"]
    assert early["program"]["rule"] == "startup"
    assert early["program"]["programShare"] == early["amount"]
    late = records["after"]["spec"]
    share = (Decimal(late["amount"]) * 30 / 100).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
    assert late["program"]["rule"] == "city-30"
    assert Decimal(late["program"]["programShare"]) == share


def _condition(program: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (program.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


def test_a_programme_turns_expired_at_its_period_s_end_by_itself_and_keeps_its_vouchers(
    clocked: Clocked,
) -> None:
    end = datetime.now(UTC) + SWITCH_IN
    clocked.create(end)
    namespace = clocked.company("acme")
    wait_vouchers(clocked.api, clocked.name, [namespace])
    active = wait_for(
        lambda: _condition(clocked.api.program(clocked.name), "Active"),
        timeout=TIMEOUTS.condition_stable,
        what="the programme's conditions",
    )
    assert active["status"] == "True"

    def expired() -> dict[str, Any] | None:
        condition = _condition(clocked.api.program(clocked.name), "Expired")
        return condition if condition is not None and condition["status"] == "True" else None

    condition = wait_for(
        expired, timeout=SWITCH_IN.seconds + CLOCK_SLACK, what="Expired at the period's end"
    )
    assert condition["reason"] == "PeriodOver"
    active = _condition(clocked.api.program(clocked.name), "Active")
    assert active is not None and active["status"] == "False"
    # The voucher stays, as the tenant's record, and admits nothing more.
    assert clocked.voucher(namespace) is not None
    with pytest.raises(ApiException) as refused:
        clocked.submit(namespace, "too-late", run_for="2s")
    assert refused.value.status == 403
    assert "validUntil" in str(refused.value.body), refused.value.body


def test_a_voucher_is_withdrawn_only_once_the_jobs_holding_on_it_are_charged(
    clocked: Clocked,
) -> None:
    clocked.create(datetime.now(UTC) + timedelta(days=30))
    namespace = clocked.company("bolt")
    wait_vouchers(clocked.api, clocked.name, [namespace])
    clocked.submit(namespace, "running", run_for="15s")
    clocked.api.core.patch_namespace(
        namespace, {"metadata": {"labels": {"suanli.io/e2e-clock": None}}}
    )
    # While the job runs, the voucher it will be charged to stays.
    record = wait_for(
        lambda: clocked.record(namespace, "running") or (clocked.voucher(namespace) is None),
        timeout=TIMEOUTS.job_complete,
        what="the job's usage record (or, wrongly, its voucher withdrawn first)",
    )
    assert record is not True, "the voucher was withdrawn while its job still held on it"
    assert record["spec"]["voucher"] == VOUCHER.format(clocked.name)
    wait_for(
        lambda: clocked.voucher(namespace) is None,
        timeout=TIMEOUTS.condition_stable + 40,
        what="the voucher withdrawn once its job was charged",
    )


def test_a_center_the_programme_stops_selecting_is_no_longer_subsidised_in_new_quotes(
    clocked: Clocked, members_joined: list[str]
) -> None:
    """Only a member's labels change (no spec change): admission sees it all the same."""
    member = members_joined[0]
    label = f"suanli.io/e2e-local-{clocked.tag}"

    def relabel(value: str | None) -> None:
        clocked.api.custom.patch_cluster_custom_object(
            GROUP, VERSION, "memberclusters", member, {"metadata": {"labels": {label: value}}}
        )

    relabel("true")
    try:
        clocked.create(datetime.now(UTC) + timedelta(days=30), members={label: "true"})
        namespace = clocked.company("cub")
        wait_vouchers(clocked.api, clocked.name, [namespace])
        wait_for(
            lambda: (clocked.quoted_share(namespace, "quote", member) or 0) > 0,
            timeout=TIMEOUTS.condition_stable,
            what="a quote subsidised on the selected center",
        )
        relabel(None)
        wait_for(
            lambda: clocked.quoted_share(namespace, "quote", member) == 0,  # None: again
            timeout=TIMEOUTS.condition_stable,
            what="the quote to drop the subsidy once the center's label is gone",
        )
    finally:
        relabel(None)
