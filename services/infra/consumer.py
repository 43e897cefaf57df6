"""The consumer loop every service shares: at-least-once delivery made effectively-once.

For each message: parse and validate it (else dead-letter it with the reason), skip it if its event id was
already handled (re-publishing that run's outputs if they never went out), run the handler, record the event
id with its outputs in PostgreSQL, publish the outputs, and only then commit the offset. Output event ids are
derived from input ids, so a handler that runs twice after a crash still yields events downstream drops.

The loop never waits for a slow event before polling again: records are taken in as they arrive (one
idempotency lookup per poll), handled concurrently, and settled by a finisher in groups (one insert of every
outcome, one producer flush per group), so the fixed costs are paid once per group rather than per message.
Only those two steps stand between a handler and the next consumer: marking outcomes published and committing
offsets are bookkeeping, done by a second task for everything settled since its last pass. Neither is needed
for correctness (a redelivered event whose outcome is recorded re-publishes the same events, which consumers
drop by id), only to keep redeliveries rare and the idempotency table small. An offset is committed only once
every record before it in its partition is settled. Events with the same ordering key (the project by default,
a conversation where a handler says so) are handled one after another in offset order, and their outputs go out
in that order.

This module is the loop and its ordering and commit rules; the parts it drives each have their own module:
``event_parsing`` (bytes to an event or a rejection), ``processed_events`` (the idempotency records),
``dead_letters`` (letters and their rows), ``keyed_scheduler`` (per-key turns) and ``outcomes`` (what became of
a record, settled in ``ConsumerRunner._settle``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Protocol, TypeVar, assert_never

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from events import DeadLetter, Event
from events.dead_letter import DeadLetterReason
from services.infra.bus import Bus
from services.infra.dead_letters import DeadLetters
from services.infra.event_parsing import MAX_EVENT_BYTES, Rejected, parse_event
from services.infra.keyed_scheduler import KeyedScheduler
from services.infra.metrics import (
    CONSUMER_LAG,
    EVENTS_CONSUMED,
    EVENTS_DUPLICATE,
    HANDLER_SECONDS,
    UP,
    LabelledChildren,
)
from services.infra.outcomes import AlreadyDone, Failed, Handled, Invalid, Outcome, Republish
from services.infra.processed_events import EncodedOutput, ProcessedEvents, StoredOutput, revive
from services.infra.settings import Settings

log = logging.getLogger(__name__)

# Parsing lives in event_parsing; these stay importable from here, where services and tests look for them.
__all__ = [
    "FETCH_MAX_WAIT_MS",
    "MAX_EVENT_BYTES",
    "BaseHandler",
    "ConsumerRunner",
    "Handler",
    "Rejected",
    "parse_event",
]

_T = TypeVar("_T")

_RETRYABLE_INFRA = (
    OSError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.InterfaceError,
    # A pooled connection caught mid-reconnect after an outage (asyncpg's pool refills in the background).
    asyncpg.exceptions.InternalClientError,
)
# The broker being away (publish, commit) is waited out like the system of record.
_RETRYABLE_BROKER = (*_RETRYABLE_INFRA, KafkaError)
#: How long the broker may hold a fetch that found nothing, for runners and clients built without settings
#: (the default of ``Settings.fetch_wait_ms``). Kafka answers a waiting fetch as soon as data arrives, so this
#: only bounds idle polling there; the embedded Tansu broker may hold it to the end, which makes it part of
#: every hop's latency.
FETCH_MAX_WAIT_MS: int = Settings.model_fields["fetch_wait_ms"].default
#: How often settled events are marked published and their offsets committed. A crash loses at most this
#: much bookkeeping, which only means those events are redelivered and recognised as already handled.
BOOKKEEPING_INTERVAL_S = 0.2
#: Handlers of different projects running at once in one consumer (bounded: they share a small PG pool).
MAX_CONCURRENT_KEYS = 64
#: Polled events not yet settled (handled, recorded, published) before polling pauses.
MAX_IN_FLIGHT = 2000
#: How long a rebalance waits for in-flight events to finish, and a graceful stop.
REVOKE_DRAIN_S = 30.0
STOP_DRAIN_S = 30.0


class Handler(Protocol):
    """What a service plugs into the loop. Domain work lives behind it, not in it."""

    name: ClassVar[str]
    subscriptions: ClassVar[dict[str, type[Event]]]

    async def handle(self, event: Event) -> Sequence[Event]: ...

    def on_invalid(self, topic: str, raw: dict[str, Any] | None, error: str) -> Sequence[Event]:
        """Events to emit besides the dead letter for an event that failed validation."""
        ...

    def on_failure(self, event: Event, error: BaseException) -> Sequence[Event]:
        """Events to emit besides the dead letter when handling kept failing."""
        ...


class BaseHandler(ABC):
    name: ClassVar[str] = ""
    subscriptions: ClassVar[dict[str, type[Event]]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @abstractmethod
    async def handle(self, event: Event) -> Sequence[Event]:
        """The events this event causes (derived ids); raising makes the loop retry, then dead-letter it."""

    def on_invalid(self, topic: str, raw: dict[str, Any] | None, error: str) -> Sequence[Event]:
        return ()

    def on_failure(self, event: Event, error: BaseException) -> Sequence[Event]:
        return ()

    #: True for consumers a question waits on (query, retrieval, generation): they poll with the short fetch
    #: wait; the others (feedback, training) with the long one, which costs less CPU and batches more.
    answer_path: ClassVar[bool] = False

    def ordering_key(self, event: Event) -> str:
        """Events with the same key are handled one after another in offset order; others run at once.
        The project by default: handlers whose work only depends on a conversation narrow it."""
        return event.project_id

    async def prepare_batch(self, events: Sequence[Event]) -> None:
        """Called with a poll batch's new events before any is handled, so a handler can do shared work
        (e.g. embed every question in one model call) once; the default does nothing."""
        return None


@dataclass(eq=False, slots=True)
class _Item:
    """One consumed record on its way from the poll to the offset commit; what became of it travels
    separately, as its ``Outcome``, to the finisher."""

    record: ConsumerRecord[bytes, bytes]
    settled: bool = False


class _DrainOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets in-flight events finish and commit before their partitions move to another member."""

    def __init__(self, runner: ConsumerRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.runner.drain(REVOKE_DRAIN_S)
        self.runner.forget(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class ConsumerRunner:
    """Polls continuously and keeps many events in flight, so a slow event (a model call) never holds back
    the poll: each record is parsed and checked at intake, handled in its ordering key's turn, and settled by
    a finisher task (outcomes recorded, outputs published, offsets committed up to the first unsettled one)."""

    def __init__(
        self,
        handler: BaseHandler,
        *,
        bootstrap_servers: str,
        pool: asyncpg.Pool,
        bus: Bus,
        prefix: str = "",
        max_attempts: int = 3,
        group_id: str | None = None,
        max_poll_interval_ms: int = 300_000,
        max_batch: int = 500,
        max_in_flight: int = MAX_IN_FLIGHT,
        fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
        bookkeeping_interval_s: float = BOOKKEEPING_INTERVAL_S,
    ) -> None:
        self.handler = handler
        self.pool = pool
        self.bus = bus
        self.prefix = prefix
        self.max_attempts = max_attempts
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.group_id = group_id or f"querylift-{handler.name}"
        self._topics = {prefix + topic: model for topic, model in handler.subscriptions.items()}
        # The consumer is made in run(): one made here and never started would still warn as unclosed.
        self._consumer: AIOKafkaConsumer
        self._consumer_options: dict[str, Any] = dict(
            bootstrap_servers=bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_batch,
            client_id=f"querylift-{handler.name}",
            max_poll_interval_ms=max_poll_interval_ms,
            fetch_max_wait_ms=fetch_max_wait_ms,
            # Range assignment gives one member partition i of every subscribed topic. Topics are keyed by
            # project and created with the same partition count, so a project's model.updated reaches the
            # generation instance that answers that project's questions (round robin could split them).
            # Round robin stays second so members of an older release can share a group during a rollout.
            partition_assignment_strategy=(RangePartitionAssignor, RoundRobinPartitionAssignor),
        )
        self._stopping = asyncio.Event()
        self._processed = ProcessedEvents(pool, handler.name)
        self._dead_letters = DeadLetters(pool, consumer=handler.name, group_id=self.group_id, prefix=prefix)
        # Bounds handlers, not turns: a duplicate waiting on its original takes no slot.
        self._keys = asyncio.Semaphore(MAX_CONCURRENT_KEYS)
        self._turns = KeyedScheduler()
        self._partitions: dict[TopicPartition, deque[_Item]] = {}
        self._finished: asyncio.Queue[tuple[_Item, Outcome]] = asyncio.Queue()
        self._in_flight = 0
        self._settled = asyncio.Event()
        self._finisher: asyncio.Task[None] | None = None
        # Bookkeeping owed for published groups: ids to mark published, offsets to commit, items covered.
        self._owed_marks: list[uuid.UUID] = []
        #: Events this member started (or re-published) whose processed row is not yet marked published.
        self._unmarked: set[uuid.UUID] = set()
        self._owed_offsets: dict[TopicPartition, int] = {}
        self._owed_items = 0
        self._owed = asyncio.Event()
        self._flush_now = asyncio.Event()
        self.bookkeeping_interval_s = bookkeeping_interval_s
        self._bookkeeper: asyncio.Task[None] | None = None
        self._consumed = LabelledChildren(EVENTS_CONSUMED)
        self.processed = 0

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        self._consumer = AIOKafkaConsumer(**self._consumer_options)
        self._consumer.subscribe(list(self._topics), listener=_DrainOnRevoke(self))
        try:
            await self._consumer.start()
        except BaseException:
            # A failed or cancelled start still holds sockets and tasks until stopped.
            await self._consumer.stop()
            raise
        UP.labels(self.handler.name).set(1)
        finisher = asyncio.create_task(self._finish_forever(), name=f"{self.handler.name}-finisher")
        bookkeeper = asyncio.create_task(self._bookkeep_forever(), name=f"{self.handler.name}-bookkeeper")
        self._finisher, self._bookkeeper = finisher, bookkeeper
        try:
            while not self._stopping.is_set():
                for task in (finisher, bookkeeper):
                    if task.done():
                        task.result()  # a helper task that died must stop the consumer, not stall it
                room = self.max_in_flight - self._in_flight
                if room <= 0:
                    await self._wait_settled(0.2)
                    continue
                batches = await self._consumer.getmany(timeout_ms=200, max_records=min(room, self.max_batch))
                if not batches:
                    continue
                await self._intake([record for records in batches.values() for record in records])
                self._report_lag(batches)
            await self.drain(STOP_DRAIN_S)
        finally:
            for task in (finisher, bookkeeper):
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            UP.labels(self.handler.name).set(0)
            await self._consumer.stop()

    def stop(self) -> None:
        self._stopping.set()

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member owns now (none before it has started)."""
        consumer = getattr(self, "_consumer", None)
        return set(consumer.assignment()) if consumer is not None else set()

    async def drain(self, timeout_s: float) -> bool:
        """Waits until every polled event is settled and committed; False when ``timeout_s`` ran out."""
        deadline = time.monotonic() + timeout_s
        self._flush_now.set()
        try:
            return await self._drain_until(deadline)
        finally:
            self._flush_now.clear()

    async def _drain_until(self, deadline: float) -> bool:
        while self._in_flight > 0:
            left = deadline - time.monotonic()
            helpers = (self._finisher, self._bookkeeper)
            if left <= 0 or any(task is not None and task.done() for task in helpers):
                log.warning(
                    "events still in flight after draining",
                    extra={"consumer": self.handler.name, "in_flight": self._in_flight},
                )
                return False
            await self._wait_settled(min(left, 0.5))
        return True

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Stops tracking partitions this member lost: their new owner re-reads what was not committed."""
        for tp in partitions:
            self._partitions.pop(tp, None)

    async def _wait_settled(self, timeout_s: float) -> None:
        self._settled.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout_s)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._forever(lambda: self._consumer.commit(offsets), "commit", _RETRYABLE_BROKER)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced meanwhile: the partitions' new owner gets these records again and the
            # idempotency records make that harmless. Not a reason to stop consuming.
            log.warning("offset commit skipped after a rebalance", extra={"error": str(exc)[:200]})

    def _report_lag(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for tp in batches:
            end = self._consumer.highwater(tp)
            position = batches[tp][-1].offset + 1
            if end is not None:
                CONSUMER_LAG.labels(self.handler.name, tp.topic, str(tp.partition)).set(
                    max(0, end - position)
                )

    async def _forever(
        self,
        action: Callable[[], Awaitable[_T]],
        what: str,
        retry_on: tuple[type[BaseException], ...] = _RETRYABLE_INFRA,
    ) -> _T:
        """Retry infrastructure outages (broker, system of record) until they pass; nothing is skipped."""
        delay = 0.2
        while True:
            try:
                return await action()
            except retry_on as exc:
                if self._stopping.is_set():
                    raise
                log.warning(
                    "infrastructure unavailable, retrying", extra={"what": what, "error": str(exc)[:200]}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _system_of_record_up(self) -> bool:
        try:
            await self.pool.fetchval("SELECT 1")
        except _RETRYABLE_INFRA:
            return False
        return True

    # ------------------------------------------------------------------ intake
    async def _intake(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Parses a poll's records, drops what was already handled and starts the rest; returns at once."""
        taken: list[tuple[_Item, Event | Invalid]] = []
        for record in records:
            item = _Item(record)
            short = record.topic[len(self.prefix) :]
            self._consumed(self.handler.name, short).inc()
            parsed: Event | Invalid
            try:
                parsed = parse_event(self._topics[record.topic], record.value)
            except Rejected as rej:
                parsed = Invalid(rej.reason, rej.error, self.handler.on_invalid(short, rej.raw, rej.error))
            taken.append((item, parsed))
            tp = TopicPartition(record.topic, record.partition)
            self._partitions.setdefault(tp, deque()).append(item)
        self._in_flight += len(records)

        ids = list({parsed.event_id for _, parsed in taken if not isinstance(parsed, Invalid)})
        done: dict[uuid.UUID, list[StoredOutput] | None] = {}
        if ids:
            done = await self._forever(lambda: self._processed.already_done(ids), "idempotency check")
        # Settled without running anything, in record order.
        now: list[tuple[_Item, Outcome]] = []
        fresh: list[tuple[_Item, Event]] = []
        # Duplicates of events this member started and has not yet marked published wait for the original.
        behind: list[tuple[_Item, Event]] = []
        seen: set[uuid.UUID] = set()
        for item, parsed in taken:
            if isinstance(parsed, Invalid):
                now.append((item, parsed))
                continue
            event_id = parsed.event_id
            if event_id in seen or event_id in done or event_id in self._unmarked:
                # A redelivery, or the same event twice in one poll (an upstream retry).
                EVENTS_DUPLICATE.labels(self.handler.name, item.record.topic[len(self.prefix) :]).inc()
                unpublished = done.pop(event_id, None)
                if event_id in self._unmarked:
                    # Its outputs are out, or will be once the original settles; the stored row just has not
                    # been marked yet (bookkeeping runs every interval), so re-publishing would send them twice.
                    behind.append((item, parsed))
                elif unpublished is not None:
                    now.append((item, Republish(parsed, unpublished)))
                    self._unmarked.add(event_id)
                else:
                    now.append((item, AlreadyDone()))
                continue
            seen.add(event_id)
            self._unmarked.add(event_id)
            fresh.append((item, parsed))
        for entry in now:
            self._finished.put_nowait(entry)
        if fresh:
            await self.handler.prepare_batch([event for _, event in fresh])
        for item, event in fresh:
            self._turns.submit(self.handler.ordering_key(event), partial(self._handle_in_turn, item, event))
        for item, event in behind:
            # In the original's key's turn, so it reaches the finisher after the original does.
            self._turns.submit(self.handler.ordering_key(event), partial(self._finish, item, AlreadyDone()))

    async def _handle_in_turn(self, item: _Item, event: Event) -> None:
        # One key's events are handled in offset order, so their outputs reach the finisher in that order too.
        async with self._keys:
            outcome = await self._handle(item.record, event)
        self._finished.put_nowait((item, outcome))

    async def _finish(self, item: _Item, outcome: Outcome) -> None:
        self._finished.put_nowait((item, outcome))

    # ------------------------------------------------------------------ settling
    async def _finish_forever(self) -> None:
        while True:
            settling = [await self._finished.get()]
            while not self._finished.empty():
                settling.append(self._finished.get_nowait())
            await self._settle(settling)

    async def _settle(self, settling: list[tuple[_Item, Outcome]]) -> None:
        """Records outcomes, publishes outputs and dead letters, then leaves the offsets that became
        contiguously done, and the published marks, to the bookkeeper."""
        # Each output is serialised once: the same JSON is recorded and published.
        runs: dict[uuid.UUID, list[EncodedOutput]] = {
            outcome.event.event_id: [(e, e.model_dump_json()) for e in outcome.outputs]
            for _, outcome in settling
            if isinstance(outcome, Handled)
        }
        if runs:
            await self._forever(lambda: self._processed.record_done(runs), "record processed")
        outgoing: list[tuple[Event | DeadLetter, str | None]] = []
        republished: list[uuid.UUID] = []
        for item, outcome in settling:
            match outcome:
                case Handled(event=event):
                    outgoing.extend(runs[event.event_id])
                case Republish(event=event, outputs=stored):
                    outgoing.extend((revive(o), None) for o in stored)
                    republished.append(event.event_id)
                case Invalid(reason=reason, error=error, replies=replies):
                    letter = await self._dead_letter(item.record, reason, error)
                    outgoing.append((letter, None))
                    outgoing.extend((e, None) for e in replies)
                case Failed(event=event, error=exc):
                    # Nothing was recorded, so a redelivery must run it again.
                    self._unmarked.discard(event.event_id)
                    replies = self.handler.on_failure(event, exc)
                    error = f"{type(exc).__name__}: {exc}"[:2000]
                    letter = await self._dead_letter(item.record, "processing_failed", error)
                    outgoing.append((letter, None))
                    outgoing.extend((e, None) for e in replies)
                case AlreadyDone():
                    pass  # nothing is owed: its outputs are out, or go out when the original settles
                case _:
                    assert_never(outcome)
        if outgoing:
            await self._forever(lambda: self.bus.publish_encoded(outgoing), "publish", _RETRYABLE_BROKER)
        self.processed += len(runs)

        touched: set[TopicPartition] = set()
        for item, _ in settling:
            item.settled = True
            touched.add(TopicPartition(item.record.topic, item.record.partition))
        for tp in touched:
            queue = self._partitions.get(tp)
            while queue and queue[0].settled:
                self._owed_offsets[tp] = queue.popleft().record.offset + 1
        self._owed_marks.extend(republished)
        self._owed_marks.extend(runs)
        self._owed_items += len(settling)
        self._owed.set()

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: DeadLetterReason, error: str
    ) -> DeadLetter:
        letter = self._dead_letters.letter_for(record, reason, error)
        await self._forever(partial(self._dead_letters.store, letter), "store dead letter")
        return letter

    async def _bookkeep_forever(self) -> None:
        """Marks published outcomes and commits offsets for everything settled since the last pass, at most
        once per ``bookkeeping_interval_s`` (an offset commit costs the broker about as much as a produce),
        and at once when a drain waits for it."""
        last = 0.0
        while True:
            await self._owed.wait()
            wait = last + self.bookkeeping_interval_s - time.monotonic()
            if wait > 0 and not self._flush_now.is_set():
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._flush_now.wait(), wait)
            last = time.monotonic()
            self._owed.clear()
            marks, self._owed_marks = self._owed_marks, []
            offsets, self._owed_offsets = self._owed_offsets, {}
            covered, self._owed_items = self._owed_items, 0
            steps = []
            if marks:
                steps.append(self._forever(partial(self._processed.mark_published, marks), "mark published"))
            if offsets:
                steps.append(self._commit(offsets))
            # The system of record and the broker are independent: one wait for both.
            await asyncio.gather(*steps)
            self._unmarked.difference_update(marks)
            self._in_flight -= covered
            self._settled.set()

    async def _handle(self, record: ConsumerRecord[bytes, bytes], event: Event) -> Handled | Failed:
        short = record.topic[len(self.prefix) :]
        started = time.perf_counter()
        error: BaseException | None = None
        attempt = 0
        try:
            while attempt < self.max_attempts:
                attempt += 1
                try:
                    return Handled(event, await self.handler.handle(event))
                except _RETRYABLE_INFRA as exc:
                    error = exc
                    log.warning(
                        "handler hit an outage, retrying",
                        extra={"consumer": self.handler.name, "error": str(exc)[:200]},
                    )
                    await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
                    if not await self._system_of_record_up():
                        # The system of record is away: wait for it without spending attempts, so an outage
                        # delays events instead of dead-lettering them.
                        await self._forever(self._probe, "system of record")
                        attempt -= 1
                except Exception as exc:
                    error = exc
                    log.exception(
                        "handler failed",
                        extra={
                            "consumer": self.handler.name,
                            "event_id": str(event.event_id),
                            "attempt": attempt,
                        },
                    )
                    await asyncio.sleep(0.05 * attempt)
            assert error is not None, "max_attempts must be at least 1"
            return Failed(event, error)
        finally:
            HANDLER_SECONDS.labels(self.handler.name, short).observe(time.perf_counter() - started)

    async def _probe(self) -> None:
        await self.pool.fetchval("SELECT 1")
