"""Voucher programmes on real control planes: vouchers nobody writes, a shared pool and caps
held exactly under a burst, related parties charged in full, statements that add up.

Every job costs at most 28.00 CNY (1 GPU for 1h at the H100 price of install.DEFAULT_PRICES),
its worst case, which is what admission holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.kube import Cluster, kubectl
from e2e.tenant import GROUP, VERSION, compute_job
from suanli.api.names import HOLD_ANNOTATION
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for

VOUCHER = "program-{}"
POOL = Decimal("120.00")
CREDIT = Decimal("84.00")
POOL_TEXT, CAP_TEXT, CREDIT_TEXT = "pool is committed", "would pass its cap", "credit line"


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def programme(name: str, selector: dict[str, str]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VoucherProgram",
        "metadata": {"name": name},
        "spec": {
            "period": {
                "start": _time(now - timedelta(days=1)),
                "end": _time(now + timedelta(days=30)),
            },
            "pool": str(POOL),
            "creditLine": str(CREDIT),
            "namespaceSelector": {"matchLabels": selector},
            "rules": [
                # Start-ups: everything paid, at most 2 jobs' worth (56.00).
                {
                    "name": "startup",
                    "companyClass": "startup",
                    "sharePercent": 100,
                    "companyCap": "56.00",
                },
                # Heavy users: 10% (2.80 a job, 25.20 their own): the credit line binds at 3.
                {
                    "name": "light",
                    "companyClass": "light",
                    "sharePercent": 10,
                    "companyCap": "70.00",
                },
                # Everyone else: half (14.00 a job), the cap binds at 5 jobs.
                {"name": "half", "sharePercent": 50, "companyCap": "70.00"},
            ],
        },
    }


class Hub:
    def __init__(self, hub: Cluster) -> None:
        self.cluster = hub
        self.custom = client.CustomObjectsApi(hub.api)
        self.core = hub.core

    def namespace(self, labels: dict[str, str]) -> str:
        name = f"p-{uuid.uuid4().hex[:10]}"
        self.core.create_namespace({"metadata": {"name": name, "labels": labels}})
        return name

    def get(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    def program(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.get_cluster_custom_object(
            GROUP, VERSION, "voucherprograms", name
        )
        return body

    def list(self, namespace: str, plural: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural
        )["items"]
        return items


@pytest.fixture
def world(
    hub: Cluster, operator: OperatorProcess
) -> Iterator[tuple[Hub, str, dict[str, list[str]]]]:
    """A programme and three companies: acme (two namespaces), bolt (light) and cub (startup),
    plus a namespace with a company the programme does not select."""
    api = Hub(hub)
    tag = uuid.uuid4().hex[:6]
    name = f"prog-{tag}"
    selector = {"suanli.io/e2e-programme": tag}
    api.custom.create_cluster_custom_object(
        GROUP, VERSION, "voucherprograms", programme(name, selector)
    )
    companies = {
        "acme": [api.namespace({**selector, "suanli.io/company": f"acme-{tag}"}) for _ in range(2)],
        "bolt": [
            api.namespace(
                {**selector, "suanli.io/company": f"bolt-{tag}", "suanli.io/company-class": "light"}
            )
        ],
        "cub": [
            api.namespace(
                {
                    **selector,
                    "suanli.io/company": f"cub-{tag}",
                    "suanli.io/company-class": "startup",
                }
            )
        ],
    }
    try:
        yield api, name, companies
    finally:
        for namespaces in companies.values():
            for namespace in namespaces:
                api.core.delete_namespace(namespace, propagation_policy="Background")
        api.custom.delete_cluster_custom_object(GROUP, VERSION, "voucherprograms", name)


def wait_vouchers(api: Hub, name: str, namespaces: list[str]) -> None:
    wait_for(
        lambda: all(api.get(ns, "voucherquotas", VOUCHER.format(name)) for ns in namespaces),
        timeout=TIMEOUTS.condition_stable,
        what="the programme's vouchers to be issued",
    )


def test_a_burst_never_commits_more_than_the_pool_nor_a_company_more_than_its_cap(
    world: tuple[Hub, str, dict[str, list[str]]],
) -> None:
    api, name, companies = world
    everyone = [ns for namespaces in companies.values() for ns in namespaces]
    wait_vouchers(api, name, everyone)
    voucher = api.get(everyone[0], "voucherquotas", VOUCHER.format(name))
    assert voucher is not None
    assert voucher["metadata"]["ownerReferences"][0]["kind"] == "VoucherProgram"
    assert voucher["spec"]["program"]["rule"] == "half"

    # A namespace the programme does not select, and one that stops matching, hold none.
    outsider = api.namespace({"suanli.io/company": "outsider"})
    leaver = api.namespace(
        {
            "suanli.io/e2e-programme": world[1].split("-")[1],
            "suanli.io/company": f"acme-{world[1].split('-')[1]}",
        }
    )
    try:
        wait_vouchers(api, name, [leaver])
        api.core.patch_namespace(leaver, {"metadata": {"labels": {"suanli.io/company": None}}})
        wait_for(
            lambda: api.get(leaver, "voucherquotas", VOUCHER.format(name)) is None,
            timeout=TIMEOUTS.condition_stable,
            what="the voucher of a namespace that stopped matching to be withdrawn",
        )
        assert api.get(outsider, "voucherquotas", VOUCHER.format(name)) is None
    finally:
        api.core.delete_namespace(outsider)
        api.core.delete_namespace(leaver)

    submissions = [(ns, f"job-{i:02d}") for ns in everyone for i in range(10)]

    def submit(item: tuple[str, str]) -> str | None:
        namespace, job = item
        body = compute_job(job, voucher_name=VOUCHER.format(name), run_for="1h")
        try:
            api.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "computejobs", body
            )
        except ApiException as error:
            assert error.status == 403, error
            return str(error.body)
        return None

    with ThreadPoolExecutor(max_workers=40) as pool:
        outcomes = dict(zip(submissions, pool.map(submit, submissions), strict=True))

    # What each admitted job holds of the programme, from the jobs as stored.
    shares: dict[str, Decimal] = {}
    owns: dict[str, Decimal] = {}
    for company, namespaces in companies.items():
        for namespace in namespaces:
            for job in api.list(namespace, "computejobs"):
                part = json.loads(job["metadata"]["annotations"][HOLD_ANNOTATION])["program"]
                shares[company] = shares.get(company, Decimal(0)) + Decimal(part["share"])
                owns[company] = owns.get(company, Decimal(0)) + Decimal(part["own"])
    committed = sum(shares.values(), Decimal(0))
    assert committed <= POOL
    assert shares.get("acme", Decimal(0)) <= Decimal("70.00")
    assert shares.get("cub", Decimal(0)) <= Decimal("56.00")
    for company in companies:
        assert owns.get(company, Decimal(0)) <= CREDIT
    # Demand (70 + 8.40 + 56 = 134.40) is above the pool: it is exhausted to the last job.
    assert POOL - committed < Decimal("14.00")

    refused = {item: message for item, message in outcomes.items() if message is not None}
    admitted = len(outcomes) - len(refused)
    assert admitted == sum(len(api.list(ns, "computejobs")) for ns in everyone)
    for (namespace, _), message in refused.items():
        assert any(text in message for text in (POOL_TEXT, CAP_TEXT, CREDIT_TEXT)), message
        if namespace in companies["bolt"]:
            assert CREDIT_TEXT in message, message  # only 3 of 10 fit its credit line
        if namespace in companies["acme"]:
            assert CAP_TEXT in message or POOL_TEXT in message, message
    assert any(POOL_TEXT in m for m in refused.values())
    assert any(CAP_TEXT in m for m in refused.values())

    def status_matches() -> dict[str, Any] | None:
        status = api.program(name).get("status") or {}
        return status if Decimal(status.get("committed", "-1")) == committed else None

    status = wait_for(status_matches, timeout=TIMEOUTS.condition_stable, what="programme status")
    assert Decimal(status["left"]) == POOL - committed
    assert status["companies"] == 3


def test_a_related_party_job_is_charged_in_full_and_statements_add_up(
    world: tuple[Hub, str, dict[str, list[str]]], members_joined: list[str]
) -> None:
    api, name, companies = world
    acme, other = companies["acme"][0], companies["cub"][0]
    wait_vouchers(api, name, [acme, other])
    owned, elsewhere = members_joined[0], members_joined[1]
    company = f"acme-{name.split('-')[1]}"
    api.custom.patch_cluster_custom_object(
        GROUP, VERSION, "memberclusters", owned, {"spec": {"ownerCompany": company}}
    )
    try:
        own = compute_job(
            "own-center",
            voucher_name=VOUCHER.format(name),
            run_for="2s",
            placement={"clusters": [owned]},
        )
        # The same company elsewhere, and another company on that center, are subsidised.
        away = compute_job(
            "elsewhere",
            voucher_name=VOUCHER.format(name),
            run_for="2s",
            placement={"clusters": [elsewhere]},
        )
        guest = compute_job(
            "guest",
            voucher_name=VOUCHER.format(name),
            run_for="2s",
            placement={"clusters": [owned]},
        )

        def quoted_unsubsidised() -> dict[str, Any] | None:
            # A dry run: the hold the operator quotes once it has seen the member's owner.
            try:
                shown = api.custom.create_namespaced_custom_object(
                    GROUP, VERSION, acme, "computejobs", own, dry_run="All"
                )
            except ApiException as error:
                # The owner arrived between the mutating and the validating call: the quote
                # changed under the request, which is refused to be retried.
                if error.status == 409 and "does not carry the hold" in str(error.body):
                    return None
                raise
            hold = json.loads(shown["metadata"]["annotations"][HOLD_ANNOTATION])
            return hold if Decimal(hold["program"]["share"]) == 0 else None

        hold = wait_for(quoted_unsubsidised, timeout=TIMEOUTS.condition_stable, what="the owner")
        assert Decimal(hold["program"]["own"]) == Decimal(hold["amount"])
        for namespace, body in ((acme, own), (acme, away), (other, guest)):
            api.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "computejobs", body
            )

        def charged(namespace: str, job: str) -> dict[str, Any] | None:
            records = [
                r for r in api.list(namespace, "usagerecords") if r["spec"]["job"]["name"] == job
            ]
            return records[0] if records else None

        records = {
            job: wait_for(
                lambda ns=ns, job=job: charged(ns, job),
                timeout=TIMEOUTS.job_complete,
                what=f"{job}'s usage record",
            )
            for ns, job in ((acme, "own-center"), (acme, "elsewhere"), (other, "guest"))
        }
    finally:
        api.custom.patch_cluster_custom_object(
            GROUP, VERSION, "memberclusters", owned, {"spec": {"ownerCompany": None}}
        )
    related = records["own-center"]["spec"]
    assert related["program"]["programShare"] == "0.00"
    assert related["program"]["companyShare"] == related["amount"]
    assert related["program"]["noSubsidyReason"] == "RelatedParty"
    for job, percent in (("elsewhere", 50), ("guest", 100)):
        spec = records[job]["spec"]
        amount = Decimal(spec["amount"])
        expected = (amount * percent / 100).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
        assert Decimal(spec["program"]["programShare"]) == expected
        assert Decimal(spec["program"]["companyShare"]) == amount - expected

    # The statements, from the CLI, add up to the records and to the programme's spent.
    month = datetime.now(UTC).strftime("%Y-%m")
    command = [
        sys.executable,
        "-m",
        "suanli",
        "statements",
        name,
        "--month",
        month,
        "--kubeconfig",
        api.cluster.info.kubeconfig,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ)
    statement = json.loads(result.stdout)
    every = [r["spec"] for r in records.values()]
    subsidy = sum((Decimal(s["program"]["programShare"]) for s in every), Decimal(0))
    payable = sum((Decimal(s["program"]["companyShare"]) for s in every), Decimal(0))
    assert Decimal(statement["subsidy"]) == subsidy
    assert sum((Decimal(c["subsidy"]) for c in statement["companies"]), Decimal(0)) == subsidy
    assert sum((Decimal(c["payable"]) for c in statement["companies"]), Decimal(0)) == payable
    assert sum((Decimal(c["claim"]) for c in statement["centers"]), Decimal(0)) == subsidy
    proofs = sorted(p for c in statement["centers"] for p in c["records"])
    assert proofs == sorted(
        f"{r['metadata']['namespace']}/{r['metadata']['name']}" for r in records.values()
    )
    # Regenerated, the same to the cent.
    again = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ)
    assert again.stdout == result.stdout
    csv_rows = subprocess.run(
        [*command, "--format", "csv", "--by", "center"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert csv_rows[0].startswith("center,claim")

    def spent_matches() -> dict[str, Any] | None:
        status = api.program(name).get("status") or {}
        return status if Decimal(status.get("spent", "-1")) == subsidy else None

    wait_for(spent_matches, timeout=TIMEOUTS.condition_stable, what="the programme's spent")
    check_statement_objects(api, name, month, statement, subsidy)


def _records_digest(records: list[dict[str, Any]]) -> str:
    """The digest as docs/programmes.md tells an auditor to compute it from kubectl's output."""
    ordered = sorted(records, key=lambda r: (r["metadata"]["namespace"], r["metadata"]["name"]))
    text = "".join(
        f"{r['metadata']['namespace']}/{r['metadata']['name']} {r['spec']['amount']} "
        f"{r['spec']['program']['programShare']} {r['spec']['program']['companyShare']}\n"
        for r in ordered
    )
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def check_statement_objects(
    api: Hub, program: str, month: str, printed: dict[str, Any], subsidy: Decimal
) -> None:
    """The operator keeps the month's statements as objects `kubectl get vst` lists: one per
    company and per center, with the CLI's figures, and each center's selector lists exactly
    the records whose programme shares make its claim."""
    hub = api.cluster
    selector = f"suanli.io/program={program},suanli.io/month={month}"
    companies = {c["company"]: c for c in printed["companies"]}
    centers = {c["center"]: c for c in printed["centers"]}

    expected = {party: line["amount"] for party, line in (*companies.items(), *centers.items())}

    def listed() -> dict[str, dict[str, Any]] | None:
        # Current once every party's statement is there, with the records' amount and a status.
        items = json.loads(kubectl(hub, "get", "vst", "-l", selector, "-o", "json").stdout)
        by_party = {item["spec"]["party"]: item for item in items["items"]}
        amounts = {
            party: item["spec"]["totals"]["amount"]
            for party, item in by_party.items()
            if (item.get("status") or {}).get("phase")
        }
        return by_party if amounts == expected and len(items["items"]) == len(by_party) else None

    found = wait_for(listed, timeout=TIMEOUTS.condition_stable, what="the statement objects")
    table = kubectl(hub, "get", "vst", "-l", selector).stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "PROGRAM",
        "MONTH",
        "FOR",
        "PARTY",
        "SUBSIDY",
        "PAYABLE",
        "RECORDS",
        "PHASE",
        "AGE",
    ]
    assert len(table) == 1 + len(companies) + len(centers)
    for party, company in companies.items():
        spec = found[party]["spec"]
        assert spec["for"] == "Company"
        assert spec["usage"] == company["usage"]
        assert spec["totals"] == {
            key: company[key] for key in ("gpuSeconds", "amount", "subsidy", "payable")
        }
        mine = kubectl(hub, "get", "vst", "-l", f"suanli.io/company={party}", "-o", "name")
        assert mine.stdout.split() == [
            f"voucherstatement.suanli.io/{found[party]['metadata']['name']}"
        ]
    for party, center in centers.items():
        item = found[party]
        spec = item["spec"]
        assert spec["for"] == "Center"
        assert spec["totals"]["claim"] == center["claim"]
        assert spec["totals"]["amount"] == center["amount"]
        records = json.loads(
            kubectl(
                hub, "get", "usagerecords", "-A", "-l", spec["records"]["selector"], "-o", "json"
            ).stdout
        )["items"]
        names = sorted(f"{r['metadata']['namespace']}/{r['metadata']['name']}" for r in records)
        assert names == sorted(center["records"])
        shares = sum((Decimal(r["spec"]["program"]["programShare"]) for r in records), Decimal(0))
        assert shares == Decimal(spec["totals"]["claim"])
        assert spec["records"]["count"] == len(records)
        assert spec["records"]["digest"] == _records_digest(records)
        assert item["status"]["phase"] == "Open"
        assert not item["metadata"].get("ownerReferences")  # the audit trail outlives programmes
        assert item["status"]["revision"] >= 1
    # Both sides add up to the programme's spent, to the cent.
    statuses = [item["spec"] for item in found.values()]
    assert (
        sum(
            (Decimal(s["totals"]["subsidy"]) for s in statuses if s["for"] == "Company"), Decimal(0)
        )
        == subsidy
    )
    assert sum(
        (Decimal(s["totals"]["claim"]) for s in statuses if s["for"] == "Center"), Decimal(0)
    ) == Decimal(api.program(program)["status"]["spent"])
    # The audit trail is the platform's: cleaned up here by hand, never by the operator.
    kubectl(hub, "delete", "vst", "-l", selector)


def test_a_programme_the_rules_forbid_is_refused_at_apply_naming_the_field(
    hub: Cluster, operator: OperatorProcess
) -> None:
    body = programme(f"bad-{uuid.uuid4().hex[:6]}", {"suanli.io/e2e-programme": "none"})
    period = body["spec"]["period"]
    period["start"], period["end"] = period["end"], period["start"]  # ends before it starts
    body["spec"]["rules"][0]["companyCap"] = str(POOL + 1)  # a cap above the pool
    applied = kubectl(hub, "apply", "-f", "-", stdin=json.dumps(body), check=False)
    assert applied.returncode != 0, applied.stdout
    assert "denied the request" in applied.stderr, applied.stderr
    assert "spec.period.end: must be after spec.period.start" in applied.stderr
    assert "spec.rules[0].companyCap" in applied.stderr
    listed = client.CustomObjectsApi(hub.api).list_cluster_custom_object(
        GROUP, VERSION, "voucherprograms"
    )
    assert body["metadata"]["name"] not in {p["metadata"]["name"] for p in listed["items"]}
