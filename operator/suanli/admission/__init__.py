"""What admission needs besides the pure rules of :mod:`suanli.vouchers` and :mod:`suanli.api`:

- :mod:`.gate`: whether this replica admits now, and what to tell a caller when it does not;
- :mod:`.references`: the hub reads of the Secrets and ConfigMaps a template names, bounded in
  number, concurrency and time.

The webhooks themselves are Kopf handlers (:mod:`suanli.handlers.admission`).
"""
