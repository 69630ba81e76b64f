"""suanli: federate GPU computing centers on Kubernetes.

The operator admits tenants' ComputeJobs against their compute vouchers, dispatches them to the
member cluster with live GPU capacity at the best price, follows them to the end and meters what
they used. See README.md for the tour and design notes.

The package is layered, and imports run one way (``[tool.importlinter]`` in pyproject.toml,
checked by ``lint-imports`` in CI): the entry points (:mod:`suanli.cli`, :mod:`suanli.plugin`)
over the Kopf handlers and webhooks (:mod:`suanli.handlers`), over the process's parts (probes,
certificates, tuning), :mod:`suanli.admission`, :mod:`suanli.controller`, the Lease
(:mod:`suanli.leadership`), the member link (:mod:`suanli.members`), the hub client
(:mod:`suanli.kube`) and what is reported or rendered (status, RBAC, member access,
monitoring); below them the pure cores, :mod:`suanli.dispatch` over :mod:`suanli.vouchers` and
:mod:`suanli.telemetry`, then :mod:`suanli.kits` and ``options`` (plain data), then
:mod:`suanli.api`, and at the bottom ``errors`` and ``metrics``. No cycles;
:mod:`suanli.devenv` may use anything and nothing in production uses it.
"""

__version__ = "0.1.0"
