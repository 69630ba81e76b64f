"""Keeping up with one kind of object in a member cluster: list, then watch, in a thread.

A :class:`ResourceWatcher` does what client-go's reflector does, minus the cache:

1. List everything (in pages), hand the full list to ``on_synced``.
2. Watch from the list's resourceVersion, with bookmarks, and hand each ADDED, MODIFIED and
   DELETED to ``on_event``. A watch the server ends (its ``timeoutSeconds`` ran out) is
   resumed from the last resourceVersion seen, so nothing is missed and nothing relisted.
3. When the server says that resourceVersion is too old (410 Gone, as an ERROR event or as
   the response), list again: ``on_synced`` then carries the fresh state.
4. On any other failure (connection refused or lost, no answer, an HTTP error), wait a
   bounded, growing, jittered delay and list again. After an outage the consumer gets a
   full list rather than a stream that may have been cut anywhere.

The I/O is behind :class:`ResourceSource`, so the loop is tested without a cluster
(``suanli.members.kubeapi`` has the real one). The callbacks run on the watcher's thread;
whoever needs them elsewhere (the event loop) hands them over.

Stopping is prompt: :meth:`ResourceWatcher.stop` interrupts the open stream from the calling
thread (a socket shutdown), so the thread does not wait for the server's timeout.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

log = logging.getLogger(__name__)

OBJECT_EVENTS: Final = frozenset({"ADDED", "MODIFIED", "DELETED"})
BOOKMARK: Final = "BOOKMARK"
ERROR: Final = "ERROR"
HTTP_GONE: Final = 410

# A watch that ends this fast without an event is suspicious (a proxy cutting streams, a server
# refusing the resourceVersion): the next attempt waits a backoff delay instead of hammering it.
_SHORT_WATCH_SECONDS: Final = 1.0
# A watch that lasted this long, or delivered events, shows the member is healthy again.
_HEALTHY_WATCH_SECONDS: Final = 10.0


class ResourceGoneError(Exception):
    """The resourceVersion (or list continuation) is too old: list again."""


class WatchError(Exception):
    """The stream said something other than an event: an ERROR event or unreadable text."""


@dataclass(frozen=True)
class WatchEvent:
    type: str
    """ADDED, MODIFIED, DELETED or BOOKMARK."""
    object: dict[str, Any]

    @property
    def resource_version(self) -> str | None:
        metadata = self.object.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        return str(version) if version else None


def parse_event(line: bytes | str) -> WatchEvent:
    """One line of a watch stream as an event.

    Raises:
        ResourceGoneError: an ERROR event with code 410.
        WatchError: any other ERROR event, or a line that is not an event.
    """
    try:
        data = json.loads(line)
    except ValueError as error:
        raise WatchError(f"unreadable watch event: {error}") from None
    kind = data.get("type") if isinstance(data, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(kind, str) or not isinstance(obj, dict):
        raise WatchError(f"not a watch event: {str(line)[:200]}")
    if kind == ERROR:
        code = obj.get("code")
        message = f"{obj.get('reason') or 'Error'}: {obj.get('message') or ''}".rstrip(": ")
        if code == HTTP_GONE:
            raise ResourceGoneError(message)
        raise WatchError(f"watch error {code}: {message}")
    if kind not in OBJECT_EVENTS and kind != BOOKMARK:
        raise WatchError(f"unknown watch event type {kind!r}")
    return WatchEvent(kind, obj)


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a byte stream into its non-empty lines; an unfinished last line is dropped.

    A watch stream is one JSON document per line; chunks may cut anywhere. Text after the last
    newline is a document the stream was cut in the middle of, not an event.
    """
    pending = b""
    for chunk in chunks:
        if not chunk:
            continue
        pending += chunk
        if b"\n" not in chunk:
            continue
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line


class Backoff:
    """Growing delays between failed attempts: ``initial`` times ``factor`` per failure, up to
    ``maximum``, each stretched by up to ``jitter`` (a fraction) so members that failed
    together do not retry together."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 15.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng
        self._failures = 0

    @property
    def failures(self) -> int:
        return self._failures

    def next(self) -> float:
        base = min(self.maximum, self.initial * self.factor ** min(self._failures, 64))
        self._failures += 1
        return min(self.maximum, base * (1.0 + self.jitter * self._rng()))

    def reset(self) -> None:
        self._failures = 0


class WatchStream(Protocol):
    """An open watch response."""

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives; ends when the server ends the watch."""
        ...

    def interrupt(self) -> None:
        """Make ``chunks`` end or fail soon; called from another thread."""
        ...

    def close(self) -> None: ...


class ResourceSource(Protocol):
    """Where one kind of object is listed and watched."""

    kind: str
    """The objects' kind, e.g. ``Node`` (list items carry none; it is filled in)."""
    api_version: str

    def list_page(self, continue_token: str | None) -> dict[str, Any]:
        """One page of the list, as the API returns it (``items``, ``metadata``).

        Raises:
            ResourceGoneError: the continue token expired.
        """
        ...

    def open_watch(self, resource_version: str) -> WatchStream:
        """Start a watch from ``resource_version`` (the source sets bookmarks and timeouts).

        Raises:
            ResourceGoneError: the server answered 410 at once.
        """
        ...


Describe = Callable[[BaseException], str]


class _StoppingError(Exception):
    pass


class ResourceWatcher:
    """List-then-watch of one :class:`ResourceSource` in a daemon thread.

    Args:
        source: Where to list and watch.
        on_synced: Called with every object after each (re)list.
        on_event: Called with (ADDED/MODIFIED/DELETED, object) for each change.
        on_error: Called with a message when listing or watching fails (then it retries).
        describe: Turns an exception into that message.
        status_of: The HTTP status an exception carries (None: no answer came), kept in
            ``last_error_status`` so a consumer can tell refused credentials from an outage.
        backoff: Delays between failed attempts.
        name: The thread's name, for logs.
    """

    def __init__(
        self,
        source: ResourceSource,
        *,
        on_synced: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        on_error: Callable[[str], None] | None = None,
        describe: Describe = lambda error: f"{type(error).__name__}: {error}",
        status_of: Callable[[BaseException], int | None] = lambda _error: None,
        backoff: Backoff | None = None,
        name: str = "watch",
    ) -> None:
        self._source = source
        self._on_synced = on_synced
        self._on_event = on_event
        self._on_error = on_error
        self._describe = describe
        self._status_of = status_of
        self._backoff = backoff or Backoff()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stream: WatchStream | None = None
        self._interrupted = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.resource_version: str | None = None
        self.synced = False
        """A list has been delivered and the watch is running (False from a failure until the
        next successful list)."""
        self.last_error: str | None = None
        self.last_error_status: int | None = None
        """The HTTP status of the last failure, if the server answered; None once recovered."""
        self.lists = 0
        """Lists delivered so far."""

    # --- control, from any thread ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end, interrupting what it waits for; does not wait (see join)."""
        self._stopping.set()
        self._wake.set()
        self._interrupt_stream()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the thread; True if it ended."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def wake(self) -> None:
        """Retry now if waiting out a backoff delay (the member answers again)."""
        self._wake.set()

    def interrupt(self) -> None:
        """Drop the current watch as failed (the member stopped answering); list again later."""
        with self._lock:
            self._interrupted = True
        self._interrupt_stream()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the thread -----------------------------------------------------------------------------

    def _interrupt_stream(self) -> None:
        with self._lock:
            stream = self._stream
        if stream is not None:
            try:
                stream.interrupt()
            except Exception:  # already closed or released: nothing left to interrupt
                log.debug("interrupting a finished stream", exc_info=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                self._interrupted = False
            try:
                items, version = self._list()
            except Exception as error:
                if self._stopping.is_set():
                    break
                self._failed(
                    f"list {self._source.kind}s: {self._describe(error)}", self._status_of(error)
                )
                self._pause()
                continue
            self.resource_version = version
            self.synced = True
            self.last_error = None
            self.last_error_status = None
            self.lists += 1
            self._on_synced(items)
            self._watch()
        self.synced = False

    def _list(self) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        version = ""
        while True:
            if self._stopping.is_set():
                raise _StoppingError("stopping")
            page = self._source.list_page(token)
            metadata = page.get("metadata") or {}
            version = str(metadata.get("resourceVersion") or version)
            for item in page.get("items") or ():
                item.setdefault("kind", self._source.kind)
                item.setdefault("apiVersion", self._source.api_version)
                items.append(item)
            token = metadata.get("continue") or None
            if token is None:
                return items, version

    def _watch(self) -> None:
        """Watch until the stream fails or the list must be redone; resume clean ends."""
        while not self._stopping.is_set():
            started = time.monotonic()
            delivered = 0
            failure: str | None = None
            failure_status: int | None = None
            gone = False
            try:
                delivered = self._watch_once()
            except ResourceGoneError as error:
                log.info("%s watch: %s; listing again", self._source.kind, error)
                gone = True
            except Exception as error:
                failure = self._describe(error)
                failure_status = self._status_of(error)
            if self._stopping.is_set():
                return
            with self._lock:
                interrupted, self._interrupted = self._interrupted, False
            if interrupted:
                failure = failure or "interrupted"
            lasted = time.monotonic() - started
            if delivered or lasted >= _HEALTHY_WATCH_SECONDS:
                self._backoff.reset()
            if failure is not None:
                self.synced = False
                self._failed(f"watch {self._source.kind}s: {failure}", failure_status)
                self._pause()
                return
            if delivered == 0 and lasted < _SHORT_WATCH_SECONDS:
                self._pause()
            if gone:
                return

    def _watch_once(self) -> int:
        """One watch request; returns how many object events it delivered."""
        stream = self._source.open_watch(self.resource_version or "")
        with self._lock:
            self._stream = stream
            cut = self._interrupted or self._stopping.is_set()
        delivered = 0
        try:
            if cut:
                return 0
            for line in iter_lines(stream.chunks()):
                event = parse_event(line)
                version = event.resource_version
                if version:
                    self.resource_version = version
                if event.type == BOOKMARK:
                    continue
                if self._stopping.is_set():
                    break
                self._on_event(event.type, event.object)
                delivered += 1
        finally:
            with self._lock:
                self._stream = None
            stream.close()
        self.last_error = None
        self.last_error_status = None
        return delivered

    def _failed(self, message: str, status: int | None = None) -> None:
        # Once per distinct failure: an outage repeats the same one every backoff.
        log.log(logging.DEBUG if message == self.last_error else logging.WARNING, "%s", message)
        self.last_error = message
        self.last_error_status = status
        if self._on_error is not None:
            self._on_error(message)

    def _pause(self) -> None:
        """Wait a backoff delay, cut short by wake() or stop()."""
        delay = self._backoff.next()
        self._wake.wait(delay)
        self._wake.clear()
