"""The list-then-watch loop of a member link, against a scripted source (no cluster)."""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from suanli.kits.waiting import wait_for
from suanli.members.watch import (
    Backoff,
    ResourceGoneError,
    ResourceWatcher,
    WatchError,
    iter_lines,
    parse_event,
)

WAIT = 5.0


def node(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


def event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def gone() -> bytes:
    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    return event("ERROR", status)


class FakeStream:
    """A watch response: the scripted chunks, then either the end, an error, or (``hold``) a
    wait for interrupt(), like an idle watch on a live server."""

    def __init__(
        self, chunks: list[bytes], *, error: Exception | None = None, hold: bool = False
    ) -> None:
        self._chunks = chunks
        self._error = error
        self._hold = hold
        self.cut = threading.Event()
        self.closed = False

    def chunks(self) -> Iterator[bytes]:
        yield from self._chunks
        if self._hold:
            self.cut.wait(30)
            raise ConnectionResetError(104, "Connection reset by peer")
        if self._error is not None:
            raise self._error

    def interrupt(self) -> None:
        self.cut.set()

    def close(self) -> None:
        self.closed = True


class FakeSource:
    """Lists and watches scripted in queues; when a queue runs dry, lists fail (the member is
    down) and watches hold (an idle stream)."""

    kind = "Node"
    api_version = "v1"

    def __init__(self) -> None:
        self.pages: queue.Queue[dict[str, Any] | Exception] = queue.Queue()
        self.streams: queue.Queue[FakeStream | Exception] = queue.Queue()
        self.list_calls: list[str | None] = []
        self.watch_calls: list[str] = []
        self.watch_times: list[float] = []
        self.opened: list[FakeStream] = []

    def list_page(self, continue_token: str | None) -> dict[str, Any]:
        self.list_calls.append(continue_token)
        try:
            page = self.pages.get_nowait()
        except queue.Empty:
            raise ConnectionRefusedError(111, "Connection refused") from None
        if isinstance(page, Exception):
            raise page
        return page

    def open_watch(self, resource_version: str) -> FakeStream:
        self.watch_calls.append(resource_version)
        self.watch_times.append(time.monotonic())
        try:
            stream = self.streams.get_nowait()
        except queue.Empty:
            stream = FakeStream([], hold=True)
        if isinstance(stream, Exception):
            raise stream
        self.opened.append(stream)
        return stream


def page(version: str, *names: str, token: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": version}
    if token:
        metadata["continue"] = token
    return {"metadata": metadata, "items": [node(n, version) for n in names]}


class Recorder:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def synced(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            self.log.append(("synced", [i["metadata"]["name"] for i in items]))

    def event(self, kind: str, obj: dict[str, Any]) -> None:
        with self.lock:
            self.log.append((kind, obj["metadata"]["name"]))

    def count(self, what: str) -> int:
        with self.lock:
            return sum(1 for entry in self.log if entry[0] == what)

    def snapshot(self) -> list[tuple[str, Any]]:
        with self.lock:
            return list(self.log)


def running(source: FakeSource, recorder: Recorder, **options: Any) -> ResourceWatcher:
    watcher = ResourceWatcher(
        source,
        on_synced=recorder.synced,
        on_event=recorder.event,
        backoff=options.pop("backoff", Backoff(initial=0.01, maximum=0.05)),
        **options,
    )
    watcher.start()
    return watcher


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def stop(watcher: ResourceWatcher) -> None:
    watcher.stop()
    assert watcher.join(2.0), "the watcher thread did not end"


# --- pure pieces ----------------------------------------------------------------------------------


def test_parse_event_reads_object_events_and_bookmarks() -> None:
    added = parse_event(event("ADDED", node("n1", "7")))
    assert (added.type, added.object["metadata"]["name"], added.resource_version) == (
        "ADDED",
        "n1",
        "7",
    )
    bookmark = parse_event(event("BOOKMARK", {"metadata": {"resourceVersion": "9"}}))
    assert (bookmark.type, bookmark.resource_version) == ("BOOKMARK", "9")


def test_parse_event_turns_410_into_gone_and_other_errors_into_watch_errors() -> None:
    with pytest.raises(ResourceGoneError, match="too old"):
        parse_event(gone())
    forbidden = {"kind": "Status", "code": 403, "reason": "Forbidden", "message": "no"}
    with pytest.raises(WatchError, match="403"):
        parse_event(event("ERROR", forbidden))
    for junk in (b"{not json", b"[1, 2]", b'{"type": "ADDED"}', b'{"type": "X", "object": {}}'):
        with pytest.raises(WatchError):
            parse_event(junk)


def test_iter_lines_joins_chunks_cut_anywhere_and_drops_an_unfinished_line() -> None:
    text = event("ADDED", node("a", "1")) + b"\n" + event("DELETED", node("b", "2"))
    chunks = [text[i : i + 7] for i in range(0, len(text), 7)] + [b'{"type": "ADD']
    lines = list(iter_lines(chunks))
    assert [parse_event(line).type for line in lines] == ["ADDED", "DELETED"]


def test_backoff_grows_to_its_cap_with_bounded_jitter_and_resets() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, factor=2.0, jitter=0.2, rng=lambda: 1.0)
    delays = [backoff.next() for _ in range(6)]
    assert delays == [0.6, 1.2, 2.4, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.6
    still = Backoff(initial=0.5, maximum=4.0, jitter=0.2, rng=lambda: 0.0)
    assert [still.next() for _ in range(3)] == [0.5, 1.0, 2.0]


# --- the loop -------------------------------------------------------------------------------------


def test_lists_all_pages_then_delivers_events_in_order_and_resumes_from_the_last_version(
    source: FakeSource, recorder: Recorder
) -> None:
    source.pages.put(page("10", "n1", "n2", token="next"))
    source.pages.put(page("10", "n3"))
    first = [
        event("ADDED", node("n4", "11")),
        event("MODIFIED", node("n1", "12")),
        event("BOOKMARK", {"metadata": {"resourceVersion": "15"}}),
        event("DELETED", node("n2", "13")),
    ]
    # Chunks split mid-event, and the server ends the watch (its timeout).
    blob = b"".join(first)
    source.streams.put(FakeStream([blob[:50], blob[50:]]))
    watcher = running(source, recorder)
    try:
        wait_for(lambda: len(source.watch_calls) >= 2, timeout=WAIT, what="a second watch")
        assert source.list_calls == [None, "next"]
        assert recorder.snapshot() == [
            ("synced", ["n1", "n2", "n3"]),
            ("ADDED", "n4"),
            ("MODIFIED", "n1"),
            ("DELETED", "n2"),
        ]
        # The first watch starts at the list's version; the next one resumes where the
        # first ended (the DELETED event's version is older than the bookmark's: the last
        # version seen wins, as the server orders them).
        assert source.watch_calls[:2] == ["10", "13"]
        assert source.opened[0].closed
        assert watcher.synced and watcher.lists == 1
    finally:
        stop(watcher)


def test_list_items_get_kind_and_api_version(source: FakeSource) -> None:
    seen: list[dict[str, Any]] = []
    source.pages.put(page("1", "n1"))
    watcher = ResourceWatcher(source, on_synced=seen.extend, on_event=lambda *_: None)
    watcher.start()
    try:
        wait_for(lambda: seen, timeout=WAIT, what="the list")
        assert seen[0]["kind"] == "Node" and seen[0]["apiVersion"] == "v1"
    finally:
        stop(watcher)


def test_gone_relists_and_watches_from_the_new_list(source: FakeSource, recorder: Recorder) -> None:
    source.pages.put(page("10", "n1"))
    source.streams.put(FakeStream([event("ADDED", node("n2", "11")), gone()]))
    source.pages.put(page("50", "n1", "n2", "n3"))
    watcher = running(source, recorder)
    try:
        wait_for(lambda: recorder.count("synced") == 2, timeout=WAIT, what="the relist")
        wait_for(lambda: len(source.watch_calls) >= 2, timeout=WAIT, what="the new watch")
        assert recorder.snapshot() == [
            ("synced", ["n1"]),
            ("ADDED", "n2"),
            ("synced", ["n1", "n2", "n3"]),
        ]
        assert source.watch_calls[:2] == ["10", "50"]
    finally:
        stop(watcher)


def test_a_410_answer_to_the_watch_request_relists_too(
    source: FakeSource, recorder: Recorder
) -> None:
    source.pages.put(page("10", "n1"))
    source.streams.put(ResourceGoneError("HTTP 410 Expired"))
    source.pages.put(page("60", "n1"))
    watcher = running(source, recorder)
    try:
        wait_for(lambda: recorder.count("synced") == 2, timeout=WAIT, what="the relist")
    finally:
        stop(watcher)


def test_a_broken_stream_relists_after_a_backoff_and_recovers(
    source: FakeSource, recorder: Recorder
) -> None:
    source.pages.put(page("10", "n1"))
    source.streams.put(FakeStream([], error=ConnectionResetError(104, "reset")))
    source.pages.put(RuntimeError("still down"))
    source.pages.put(page("20", "n1", "n2"))
    errors: list[str] = []
    watcher = running(source, recorder, on_error=errors.append)
    try:
        wait_for(lambda: recorder.count("synced") == 2, timeout=WAIT, what="the relist")
        assert errors[0].startswith("watch Nodes: ")
        assert errors[1] == "list Nodes: RuntimeError: still down"
        wait_for(lambda: watcher.synced, timeout=WAIT, what="the watch to run again")
        assert watcher.last_error is None
        assert source.watch_calls[-1] == "20"
    finally:
        stop(watcher)


def test_stop_interrupts_an_idle_watch_at_once(source: FakeSource, recorder: Recorder) -> None:
    source.pages.put(page("10", "n1"))
    watcher = running(source, recorder)
    wait_for(lambda: source.opened, timeout=WAIT, what="the watch")
    started = time.monotonic()
    stop(watcher)
    assert time.monotonic() - started < 1.0
    assert source.opened[0].cut.is_set() and source.opened[0].closed
    assert not watcher.synced


def test_stop_cuts_a_long_backoff_short(source: FakeSource, recorder: Recorder) -> None:
    # Every list fails; the backoff is long.
    watcher = running(source, recorder, backoff=Backoff(initial=30, maximum=30))
    wait_for(lambda: source.list_calls, timeout=WAIT, what="a list attempt")
    started = time.monotonic()
    stop(watcher)
    assert time.monotonic() - started < 1.0


def test_interrupt_drops_the_watch_and_wake_retries_without_waiting(
    source: FakeSource, recorder: Recorder
) -> None:
    source.pages.put(page("10", "n1"))
    watcher = running(source, recorder, backoff=Backoff(initial=30, maximum=30))
    try:
        wait_for(lambda: source.opened, timeout=WAIT, what="the watch")
        # The member stops answering: the link cuts the watch, and the watcher settles into
        # a 30 s backoff before it lists again.
        watcher.interrupt()
        wait_for(lambda: watcher.last_error, timeout=WAIT, what="the watch to fail")
        assert not watcher.synced
        assert source.list_calls == [None]
        # The member answers again: no 30 s wait.
        source.pages.put(page("30", "n1", "n2"))
        watcher.wake()
        wait_for(lambda: recorder.count("synced") == 2, timeout=WAIT, what="the relist")
    finally:
        stop(watcher)


def test_a_server_that_ends_every_watch_at_once_is_not_hammered(
    source: FakeSource, recorder: Recorder
) -> None:
    source.pages.put(page("10", "n1"))
    for _ in range(50):
        source.streams.put(FakeStream([]))
    watcher = running(source, recorder, backoff=Backoff(initial=0.2, maximum=0.2, jitter=0))
    try:
        wait_for(lambda: len(source.watch_times) >= 3, timeout=WAIT, what="three watches")
        times = source.watch_times[:3]
        assert all(later - earlier >= 0.15 for earlier, later in itertools.pairwise(times))
        assert recorder.count("synced") == 1  # resumed, not relisted
    finally:
        stop(watcher)


class RefusedError(Exception):
    """An answer with an HTTP status, as the member's client raises it."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def test_the_status_of_a_refusal_is_kept_until_the_watch_recovers(
    source: FakeSource, recorder: Recorder
) -> None:
    # A revoked token: the list is refused (401), then a new token is accepted.
    source.pages.put(RefusedError(401))
    source.pages.put(page("10", "n1"))
    seen: list[int | None] = []

    def status_of(error: BaseException) -> int | None:
        status = error.status if isinstance(error, RefusedError) else None
        seen.append(status)
        return status

    watcher = running(source, recorder, status_of=status_of)
    try:
        wait_for(lambda: recorder.count("synced") == 1, timeout=WAIT, what="the list")
        assert seen[0] == 401
        assert watcher.last_error_status is None
        assert watcher.last_error is None
    finally:
        stop(watcher)


def test_a_refused_list_is_reported_with_its_status(source: FakeSource, recorder: Recorder) -> None:
    for _ in range(50):
        source.pages.put(RefusedError(403))
    watcher = running(
        source,
        recorder,
        status_of=lambda error: error.status if isinstance(error, RefusedError) else None,
    )
    try:
        wait_for(lambda: watcher.last_error_status == 403, timeout=WAIT, what="the refusal")
        assert watcher.last_error is not None
        assert watcher.last_error.startswith("list Nodes: ")
    finally:
        stop(watcher)
