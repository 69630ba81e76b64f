"""``suanli status``: the federation at a glance, for an admin."""
