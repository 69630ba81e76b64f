"""A renewed webhook certificate is served without restarting the operator."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from e2e.kube import Cluster
from e2e.tenant import Tenant, compute_job
from suanli.certs import generate_webhook_certificates
from suanli.devenv.operator_process import OperatorProcess
from suanli.handlers.operator import CERT_CHECK_INTERVAL
from suanli.kits.waiting import TIMEOUTS, wait_for


def _served_certificate(port: int) -> str:
    return ssl.get_server_certificate(("127.0.0.1", port))


def test_a_renewed_webhook_certificate_is_served_without_a_restart(
    hub: Cluster, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    pid = operator.process.pid if operator.process else None
    directory = operator.workdir / "certs"
    before = _served_certificate(operator.webhook_port)
    # As cert-manager renews a Secret mounted in a pod: new files in place (here a new CA too,
    # so the webhook configurations' caBundle must follow).
    renewed = tmp_path / "renewed"
    generate_webhook_certificates(renewed, hosts=("127.0.0.1", "localhost"))
    for name in ("ca.crt", "tls.key", "tls.crt"):
        os.replace(renewed / name, directory / name)
    wanted = ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert((directory / "tls.crt").read_text()))
    wait_for(
        lambda: _served_certificate(operator.webhook_port) == wanted,
        timeout=CERT_CHECK_INTERVAL + TIMEOUTS.condition_stable,
        what="the renewed certificate to be served",
    )
    assert wanted != before
    assert operator.running and operator.process is not None and operator.process.pid == pid
    # The API server trusts it: a job is admitted through the webhook.
    tenant = Tenant(hub, namespace)

    def admitted() -> bool:
        try:
            tenant.submit(compute_job("after-renewal", models=["H100"], run_for="1s"))
        except ApiException as error:
            assert error.status == 500, error  # the new caBundle not yet in place
            return False
        return True

    wait_for(admitted, timeout=TIMEOUTS.condition_stable, what="a create through the new CA")
