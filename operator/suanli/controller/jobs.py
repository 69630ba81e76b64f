"""The jobs in flight, as every part of the controller sees them.

One book, shared by placement, workload sync and follow-up, rather than each keeping its own
view: a job is in :attr:`JobBook.jobs` from the moment it is seen until its charge has landed
and its final status is written (or it is deleted). Finished jobs keep only their uid, so the
late echo of an earlier status write cannot start them again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from suanli.controller.status import TrackedJob


@dataclass
class JobBook:
    jobs: dict[str, TrackedJob] = field(default_factory=dict)
    # Jobs (uid) finished and charged by this process.
    finished: set[str] = field(default_factory=set)
    # Remote copies left on members a job moved away from (uid -> clusters): deleted as soon
    # as those members answer again, so a job never runs twice.
    stale_copies: dict[str, set[str]] = field(default_factory=dict)

    def add(self, tracked: TrackedJob) -> None:
        self.jobs[tracked.key] = tracked

    def get(self, key: str) -> TrackedJob | None:
        return self.jobs.get(key)

    def current(self, tracked: TrackedJob) -> bool:
        """Whether ``tracked`` is still the job followed under its key (not deleted, not
        replaced by a later sighting)."""
        return self.jobs.get(tracked.key) is tracked

    def knows(self, uid: str) -> bool:
        """Whether the job is followed, or was finished and charged, by this process."""
        return uid in self.jobs or uid in self.finished

    def live_on(self, cluster: str) -> list[TrackedJob]:
        """The jobs placed on ``cluster`` and not over."""
        return [t for t in self.jobs.values() if t.dispatched_to == cluster and not t.ended]

    def retire(self, tracked: TrackedJob) -> None:
        """The job is over and charged: its status holds everything, only its uid is kept."""
        if self.current(tracked):
            del self.jobs[tracked.key]
        self.finished.add(tracked.key)

    def drop(self, uid: str) -> TrackedJob | None:
        """The job was deleted: forget it entirely."""
        self.finished.discard(uid)
        return self.jobs.pop(uid, None)

    def mark_stale(self, uid: str, cluster: str) -> None:
        self.stale_copies.setdefault(uid, set()).add(cluster)

    def is_stale(self, uid: str, cluster: str) -> bool:
        return cluster in self.stale_copies.get(uid, ())

    def stale_removed(self, uid: str, cluster: str) -> None:
        clusters = self.stale_copies.get(uid, set())
        clusters.discard(cluster)
        if not clusters:
            self.stale_copies.pop(uid, None)
