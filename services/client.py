"""A small upstream-product client: publish chat.question / chat.feedback and await the outcome over Kafka.

Used by the demo, the pipeline benchmark and the tests, exactly as an upstream chat product would talk to
querylift — through topics only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

from aiokafka import AIOKafkaConsumer

from events import ChatAnswer, ChatError, ChatFeedback, ChatQuestion, DeadLetter
from services.infra.bus import Bus, ensure_topics
from services.infra.consumer import FETCH_MAX_WAIT_MS

Outcome = ChatAnswer | ChatError


class QueryliftClient:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        prefix: str = "",
        partitions: int = 6,
        fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
        watch_dead_letters: bool = False,
    ) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        # An upstream product needs only its answers and errors; tests of bad input also read the DLQ.
        self.watch_dead_letters = watch_dead_letters
        self.bootstrap = bootstrap_servers
        self.prefix = prefix
        self.partitions = partitions
        self.bus = Bus(bootstrap_servers, prefix=prefix, client="querylift-client")
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiters: dict[uuid.UUID, asyncio.Future[Outcome]] = {}
        self.outcomes: dict[uuid.UUID, list[Outcome]] = {}
        self.dead_letters: list[DeadLetter] = []

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, self.prefix, self.partitions)
        await self.bus.start()
        topics = [ChatAnswer.topic, ChatError.topic] + ([DeadLetter.topic] if self.watch_dead_letters else [])
        self._consumer = AIOKafkaConsumer(
            *(self.prefix + topic for topic in topics),
            bootstrap_servers=self.bootstrap,
            group_id=f"querylift-client-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="latest",
            enable_auto_commit=True,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        try:
            await self._consumer.start()
            # "latest" only counts once partitions are assigned: wait for that before anything is published.
            while not self._consumer.assignment():  # noqa: ASYNC110 - aiokafka offers no assignment event
                await asyncio.sleep(0.05)
            for tp in self._consumer.assignment():
                await self._consumer.position(tp)
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer:
            await self._consumer.stop()
        await self.bus.stop()

    async def _listen(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            topic = record.topic[len(self.prefix) :]
            try:
                data = json.loads(record.value or b"")
                if topic == DeadLetter.topic:
                    self.dead_letters.append(DeadLetter.model_validate(data))
                    continue
                outcome: Outcome = (ChatAnswer if topic == ChatAnswer.topic else ChatError).model_validate(
                    data
                )
            except ValueError:
                continue
            qid = outcome.question_event_id
            if qid is None:
                continue
            self.outcomes.setdefault(qid, []).append(outcome)
            waiter = self._waiters.pop(qid, None)
            if waiter and not waiter.done():
                waiter.set_result(outcome)

    async def publish(self, question: ChatQuestion) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if question.event_id in self.outcomes:
            future.set_result(self.outcomes[question.event_id][0])
        else:
            self._waiters[question.event_id] = future
        await self.bus.publish(question)
        return future

    async def ask(
        self,
        project_id: str,
        question: str,
        *,
        conversation_id: str = "demo",
        user_id: str = "demo-user",
        timeout_s: float = 300.0,
    ) -> Outcome:
        q = ChatQuestion(
            project_id=project_id, conversation_id=conversation_id, user_id=user_id, question=question
        )
        return await asyncio.wait_for(await self.publish(q), timeout_s)

    async def feedback(self, feedback: ChatFeedback) -> None:
        await self.bus.publish(feedback)
