"""Generic helpers every layer may use, and which use nothing of suanli's but ``metrics``.

- :mod:`.loops`: background loops that survive their errors, count them and log them once;
- :mod:`.retry`: the one back-off every retried step follows;
- :mod:`.waiting`: the bounded wait of the CLI, the dev environment and the tests.
"""
