"""``querylift feedback ANSWER_ID``: judge an answer (thumbs, rating, corrected SQL, comment) by publishing
chat.feedback, as an upstream product would. A corrected SQL is checked and run first (its rows are shown;
a refused one is not sent); then the command waits briefly to say what the project learned."""

from __future__ import annotations

import argparse
import asyncio
import uuid

import asyncpg
from rich.console import Console
from rich.table import Table

from events import ChatFeedback
from services.cli import exit_codes
from services.console.corrections import try_correction
from services.core.answers import answer_project
from services.core.examples.store import example_for_answer
from services.infra.bus import Bus
from services.infra.local_stack import NotRunning, connected_settings
from services.infra.processed_events import ProcessedEvents
from services.infra.runtime_db import open_pool
from services.infra.settings import Settings, get_settings
from services.wiring import build_databases

out = Console(soft_wrap=True)  # ids and paths stay on one line, for copying and scripts
err = Console(stderr=True, soft_wrap=True)
#: How long to wait for the answer row (the feedback consumer stores answers a moment after they are sent)
#: and then for the judgement to be learned.
ANSWER_WAIT_S = 15.0
LEARN_WAIT_S = 30.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("feedback", help="judge an answer: thumbs, rating, corrected SQL, comment")
    p.add_argument("answer_id", help="the answer id `querylift ask` printed")
    p.add_argument("--thumbs", choices=("up", "down"))
    p.add_argument("--rating", type=int, choices=range(1, 6), metavar="1-5")
    p.add_argument("--correct-sql", dest="corrected_sql", default=None, help="the SQL that is right")
    p.add_argument("--comment", default=None)
    p.add_argument("--user", default="cli")
    p.add_argument("--no-wait", action="store_true", help="do not wait to report what was learned")
    p.set_defaults(func=_feedback)


def _feedback(args: argparse.Namespace) -> int:
    if args.thumbs is None and args.rating is None and not args.corrected_sql:
        err.print(
            "[red]Nothing to send:[/] give --thumbs, --rating or --correct-sql (a --comment goes with one)."
        )
        return exit_codes.UNKNOWN
    try:
        answer_id = uuid.UUID(args.answer_id)
    except ValueError:
        err.print(f"[red]{args.answer_id!r} is not an answer id[/] (`querylift ask` prints it).")
        return exit_codes.UNKNOWN
    try:
        settings = connected_settings(get_settings())
    except NotRunning as exc:
        err.print(f"[red]{exc}[/]")
        return exit_codes.NOT_RUNNING
    return asyncio.run(feedback(settings, args, answer_id))


async def _answer_project(pool: asyncpg.Pool, answer_id: uuid.UUID) -> str | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ANSWER_WAIT_S
    while True:
        project = await answer_project(pool, answer_id)
        if project is not None or loop.time() > deadline:
            return project
        await asyncio.sleep(0.2)


async def _learned(
    pool: asyncpg.Pool, project_id: str, answer_id: uuid.UUID, feedback_id: uuid.UUID
) -> str | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LEARN_WAIT_S
    while loop.time() < deadline:
        # The feedback consumer records an event as processed once it has learned from it.
        if feedback_id in await ProcessedEvents(pool, "feedback").already_done([feedback_id]):
            example = await example_for_answer(pool, project_id, answer_id)
            if example is None:
                return "stored (no example: the answer was neither verified nor corrected)"
            verified, rated_down = example
            if rated_down:
                return "stored; the answer is rated down and never retrieved"
            if verified:
                return "stored; the example is verified and retrieved for similar questions from now on"
        await asyncio.sleep(0.2)
    return None


async def feedback(settings: Settings, args: argparse.Namespace, answer_id: uuid.UUID) -> int:
    pool = await open_pool(settings, max_size=2)
    databases = build_databases(settings)
    try:
        project_id = await _answer_project(pool, answer_id)
        if project_id is None:
            err.print(
                f"[red]No answer {answer_id}[/] in the system of record (is it an id `querylift ask` printed?)."
            )
            return exit_codes.UNKNOWN
        corrected = None
        if args.corrected_sql:
            trial = await try_correction(
                pool,
                databases,
                project_id,
                args.corrected_sql,
                timeout_s=settings.sql_timeout_s,
                row_limit=settings.sql_row_limit,
            )
            if not trial.ok:
                err.print(f"[red]Correction not sent:[/] {trial.message}")
                return exit_codes.NOT_ANSWERED
            out.print(f"corrected SQL checked and run: {trial.message}")
            if trial.columns:
                table = Table(*trial.columns)
                for row in trial.rows[:10]:
                    table.add_row(*("" if v is None else str(v) for v in row))
                out.print(table)
            corrected = trial.sql
        event = ChatFeedback(
            project_id=project_id,
            answer_id=answer_id,
            user_id=args.user,
            thumbs=args.thumbs,
            rating=args.rating,
            corrected_sql=corrected,
            comment=args.comment,
        )
        assert settings.kafka_bootstrap_servers
        bus = Bus(settings.kafka_bootstrap_servers, prefix=settings.topic_prefix, client="querylift-cli")
        await bus.start()
        try:
            await bus.publish(event)
        finally:
            await bus.stop()
        out.print(f"[green]✓[/] feedback {event.event_id} sent for answer {answer_id} ({project_id})")
        if args.no_wait:
            return exit_codes.OK
        learned = await _learned(pool, project_id, answer_id, event.event_id)
        if learned is None:
            err.print(
                "[yellow]The feedback consumer has not stored it yet; `querylift status` shows its lag.[/]"
            )
            return exit_codes.TIMED_OUT
        out.print(learned)
        return exit_codes.OK
    finally:
        await databases.close()
        await pool.close()
