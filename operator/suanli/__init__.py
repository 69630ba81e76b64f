"""suanli: federate GPU computing centers on Kubernetes.

The operator admits tenants' ComputeJobs against their compute vouchers, dispatches them to the
member cluster with live GPU capacity at the best price, follows them to the end and meters what
they used. See README.md for the tour and design notes.
"""

__version__ = "0.1.0"
