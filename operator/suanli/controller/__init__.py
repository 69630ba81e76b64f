"""The controller: admitted ComputeJobs to member clusters, followed to the end, charged once.

One module per concern, as Kueue splits MultiKueue; each part is handed the narrow interfaces
it needs (:mod:`.ports`) rather than the operator's whole run-time state, and none imports
the module that builds it (:mod:`.dispatcher` wires them together):

- :mod:`.status`: a job's status as a typed record, its wire form, and its writer.
- :mod:`.jobs`: the jobs in flight, shared by the parts.
- :mod:`.fleet`: member links, reachability, grace, kubeconfig checks and rotation, the
  capacity index fed by the links.
- :mod:`.placement`: the pending queue, the dispatch pass, recording a placement, waiting
  reasons.
- :mod:`.workload_sync`: the remote Jobs: create, re-attach after a restart, stale copies.
- :mod:`.followup`: remote progress mirrored into status, the end of an attempt or a job,
  the watchdog for pods a member will not schedule.
- :mod:`.charging`: the money: what an attempt costs, and the charge on the voucher.
- :mod:`.loops`: background loops that outlive their errors.

Kopf handlers live in :mod:`suanli.handlers` and reach the controller through
:class:`suanli.controller.dispatcher.Dispatcher`.
"""
