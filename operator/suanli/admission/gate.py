"""Whether this process may admit ComputeJobs now, and if not, what to tell the caller.

Closed until this replica leads (see :mod:`suanli.leadership`), has rebuilt every voucher's
ledger and has waited out the holds its predecessor admitted; closed again the moment it stops
leading or starts to stop. A closed gate refuses with a message that says to retry: the
refusal is about this replica, never about the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

RETRY_HINT: Final = "retry in a few seconds"


@dataclass
class AdmissionGate:
    is_open: bool = False
    why_closed: str = "this replica is starting and does not admit yet"

    def open(self) -> None:
        self.is_open = True

    def close(self, why: str) -> None:
        self.is_open = False
        self.why_closed = why

    @property
    def refusal(self) -> str:
        """The message for a request the closed gate refuses."""
        return f"suanli admission is not available here: {self.why_closed}; {RETRY_HINT}"
