"""Live fan-out of committed records to the daemon's streaming clients.

The store writer publishes every committed batch here (after COMMIT, in commit order); each
subscriber has its own bounded queue. ``publish`` never waits: a subscriber whose queue
would exceed its bound is marked *overflowed* and its queue dropped, so one slow viewer
never slows ingest or other viewers. An overflowed subscriber goes back to the store and
reads what it missed from there (``replay_then_live`` does this), so it loses nothing.

Queues are bounded in bytes (a record's protobuf size; ``RECORD_BYTES_UNKNOWN`` for other
objects), per subscriber and for all of them together: a subscriber whose chunk would take
the hub past its total overflows as if its own queue were full. So a stalled reader holds at
most its own bound, and any number of stalled readers at most the total.

Topics are ``(kind, run_id)`` tuples: ``("steps", run)``, ``("episodes", run)``,
``("messages", run)`` carry the protobuf records with ``seq_id`` set, and ``RUNS_TOPIC``
carries ``telemetry.store.RunRow`` snapshots (seq_id: the global run-change order).
Everything here runs on the daemon's event loop thread.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Hashable

Topic = Hashable
RUNS_TOPIC: Topic = ("runs", "")
#: Default bound of a chunk from ``replay_then_live_chunks`` (records).
DEFAULT_CHUNK_RECORDS = 2000
#: Default bounds of queued live records: one subscriber's, and all subscribers' together.
DEFAULT_QUEUE_BYTES = 1024 * 1024
DEFAULT_TOTAL_QUEUE_BYTES = 64 * 1024 * 1024
#: What a queued record counts when it is not a protobuf message (e.g. a run snapshot).
RECORD_BYTES_UNKNOWN = 512


def records_bytes(records: Sequence[Any]) -> int:
    """What ``records`` count against queue bounds: their serialized sizes."""
    return sum(r.ByteSize() if hasattr(r, "ByteSize") else RECORD_BYTES_UNKNOWN for r in records)


def steps_topic(run_id: str) -> Topic:
    """The topic of a run's committed steps."""
    return ("steps", run_id)


def episodes_topic(run_id: str) -> Topic:
    """The topic of a run's committed episodes."""
    return ("episodes", run_id)


def messages_topic(run_id: str) -> Topic:
    """The topic of a run's committed coordination messages."""
    return ("messages", run_id)


class _Overflowed:
    """Returned by ``Subscription.next`` when the subscriber fell behind and must catch up."""

    def __repr__(self) -> str:
        return "OVERFLOWED"


OVERFLOWED = _Overflowed()


class Subscription:
    """One subscriber's bounded queue of committed chunks (lists of records): at most
    ``capacity`` records and ``capacity_bytes`` bytes."""

    def __init__(self, hub: "LiveHub", topic: Topic, capacity: int, capacity_bytes: int) -> None:
        self.topic = topic
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        self._hub = hub
        self._chunks: deque[tuple[Sequence[Any], int]] = deque()
        self._queued = 0
        self.queued_bytes = 0
        self._overflowed = False
        self._closed = False
        self._wakeup = asyncio.Event()

    def _offer(self, records: Sequence[Any], nbytes: int) -> None:
        if self._overflowed or self._closed:
            return
        if (self._queued + len(records) > self.capacity or self.queued_bytes + nbytes > self.capacity_bytes
                or not self._hub._reserve(nbytes)):
            self._overflowed = True
            self._drop()
            self._hub.overflows += 1
        else:
            self._chunks.append((records, nbytes))
            self._queued += len(records)
            self.queued_bytes += nbytes
        self._wakeup.set()

    def _drop(self) -> None:
        self._chunks.clear()
        self._queued = 0
        self._hub._release(self.queued_bytes)
        self.queued_bytes = 0

    def reset(self) -> None:
        """Drop what is queued and clear the overflow mark: the caller is about to read the
        store, which holds everything published before this point."""
        self._drop()
        self._overflowed = False

    async def next(self) -> Sequence[Any] | _Overflowed | None:
        """The next chunk; ``OVERFLOWED`` when records were dropped for this subscriber since
        the last ``reset``; None once the hub is closed."""
        while not self._chunks and not self._overflowed and not self._closed:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._closed:
            return None
        if self._overflowed:
            return OVERFLOWED
        return self._pop()

    def next_queued(self) -> Sequence[Any] | None:
        """The next chunk if one is queued right now, else None (also when overflowed or closed:
        ``next`` reports those)."""
        if not self._chunks or self._overflowed or self._closed:
            return None
        return self._pop()

    def _pop(self) -> Sequence[Any]:
        chunk, nbytes = self._chunks.popleft()
        self._queued -= len(chunk)
        self.queued_bytes -= nbytes
        self._hub._release(nbytes)
        return chunk

    def _end(self) -> None:
        self._closed = True
        self._drop()
        self._wakeup.set()

    def close(self) -> None:
        """Unsubscribe."""
        self._end()
        self._hub._remove(self)


class LiveHub:
    """Topic-based fan-out with bounded per-subscriber queues (``queue_records`` records and
    ``queue_bytes`` bytes each, ``total_queue_bytes`` for all of them)."""

    def __init__(self, queue_records: int = 10_000, queue_bytes: int = DEFAULT_QUEUE_BYTES,
                 total_queue_bytes: int = DEFAULT_TOTAL_QUEUE_BYTES) -> None:
        self.queue_records = queue_records
        self.queue_bytes = queue_bytes
        self.total_queue_bytes = total_queue_bytes
        self.queued_bytes = 0
        self.overflows = 0
        self._subscribers: dict[Topic, set[Subscription]] = {}
        self._closed = False

    def _reserve(self, nbytes: int) -> bool:
        if self.queued_bytes + nbytes > self.total_queue_bytes:
            return False
        self.queued_bytes += nbytes
        return True

    def _release(self, nbytes: int) -> None:
        self.queued_bytes -= nbytes

    def subscribe(self, topic: Topic) -> Subscription:
        """Start receiving what is published on ``topic`` from now on."""
        sub = Subscription(self, topic, self.queue_records, self.queue_bytes)
        if self._closed:
            sub._end()
        else:
            self._subscribers.setdefault(topic, set()).add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.topic]

    def has_subscribers(self, topic: Topic) -> bool:
        """Whether anyone listens on ``topic`` (publishers skip work otherwise)."""
        return topic in self._subscribers

    def publish(self, topic: Topic, records: Sequence[Any]) -> None:
        """Hand committed ``records`` (in seq order) to every subscriber of ``topic``."""
        subs = self._subscribers.get(topic)
        if not records or not subs:
            return
        nbytes = records_bytes(records)
        for sub in tuple(subs):
            sub._offer(records, nbytes)

    def close(self) -> None:
        """End every subscription (daemon shutdown): their streams finish."""
        self._closed = True
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                sub._end()
        self._subscribers.clear()

    async def replay_then_live_chunks(self, topic: Topic, read_page: Callable[[int], Awaitable[Sequence[Any]]],
                                      since_seq: int = 0, keep: Callable[[Any], bool] | None = None,
                                      max_records: int = DEFAULT_CHUNK_RECORDS) -> AsyncIterator[Sequence[Any]]:
        """Every record of ``topic`` with seq_id > ``since_seq``, in non-empty chunks of at
        most ``max_records``: first from the store, then live, with no gap and no duplicate,
        until the hub closes. A chunk is a store page, or live, whatever is queued for us.

        ``read_page(after)`` returns stored records with seq_id > ``after`` in seq order (a
        non-empty page unless there are none), already filtered like ``keep``. ``keep``
        filters live records (e.g. one agent's). Race-free handoff: we subscribe *before*
        reading the store, and skip live records at or below the last seq sent; anything
        committed after a store read began is therefore in the queue. On overflow we read
        the store again from the last seq sent.
        Use with ``contextlib.aclosing`` so the subscription ends with the consumer.
        """
        sub = self.subscribe(topic)
        last = since_seq
        try:
            while True:
                sub.reset()
                while page := await read_page(last):
                    for piece in _pieces(page, max_records):
                        yield piece
                    last = page[-1].seq_id
                while True:
                    chunk = await sub.next()
                    if chunk is None:
                        return
                    if chunk is OVERFLOWED:
                        break
                    fresh = _after(chunk, last, keep)
                    while len(fresh) < max_records and (more := sub.next_queued()) is not None:
                        fresh.extend(_after(more, fresh[-1].seq_id if fresh else last, keep))
                    for piece in _pieces(fresh, max_records):
                        yield piece
                    if fresh:
                        last = fresh[-1].seq_id
        finally:
            sub.close()

    async def replay_then_live(self, topic: Topic, read_page: Callable[[int], Awaitable[Sequence[Any]]],
                               since_seq: int = 0,
                               keep: Callable[[Any], bool] | None = None) -> AsyncIterator[Any]:
        """``replay_then_live_chunks`` one record at a time (same arguments and guarantees)."""
        async with contextlib.aclosing(self.replay_then_live_chunks(topic, read_page, since_seq, keep)) as chunks:
            async for chunk in chunks:
                for record in chunk:
                    yield record


def _after(chunk: Sequence[Any], last: int, keep: Callable[[Any], bool] | None) -> list[Any]:
    """The records of a live chunk not yet sent (seq_id > ``last``) that ``keep`` wants."""
    return [record for record in chunk if record.seq_id > last and (keep is None or keep(record))]


def _pieces(records: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``records`` cut into consecutive non-empty pieces of at most ``size``."""
    if len(records) <= size:
        if records:
            yield records
        return
    for start in range(0, len(records), size):
        yield records[start:start + size]
