"""``querylift ask PROJECT "question"``: one question through Kafka, like an upstream product asks it; prints
the answer, its SQL, the first rows, the chart (a rendered PNG), the confidence, whether a verified example
answered, the suggested next questions and the answer id to give feedback on."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from events import ChatAnswer, ChatError, ErrorCode
from services.cli import exit_codes
from services.client import QueryliftClient
from services.console.review import confidence_words
from services.generation.chart import render_chart_png
from services.infra.local_stack import NotRunning, connected_settings
from services.infra.settings import Settings, get_settings

out = Console(soft_wrap=True)  # ids and paths stay on one line, for copying and scripts
err = Console(stderr=True, soft_wrap=True)
#: Rows printed in the terminal table (the answer carries up to QUERYLIFT_PREVIEW_ROWS).
SHOWN_ROWS = 10


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ask", help="ask a project a question and print the answer")
    p.add_argument("project")
    p.add_argument("question")
    p.add_argument("--conversation", default=None, help="conversation id, for follow-up questions")
    p.add_argument("--user", default="cli", help="user id recorded with the question")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the answer")
    p.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    p.set_defaults(func=_ask)


def answer_confidence(answer: ChatAnswer) -> float:
    """The confidence the generation consumer gave the answer (calibrated on the benchmark)."""
    return answer.confidence


def chart_file(settings: Settings, answer: ChatAnswer) -> Path | None:
    """The answer's chart rendered as a PNG under the data dir (None when the answer has none to draw)."""
    if answer.chart is None or not answer.columns or answer.chart.type.value == "table":
        return None
    path = settings.data_dir.resolve() / "charts" / f"{answer.event_id}.png"
    return render_chart_png(answer.chart, answer.columns, answer.rows_preview, path)


def _ask(args: argparse.Namespace) -> int:
    try:
        settings = connected_settings(get_settings())
    except NotRunning as exc:
        err.print(f"[red]{exc}[/]")
        return exit_codes.NOT_RUNNING
    return asyncio.run(ask(settings, args))


async def ask(settings: Settings, args: argparse.Namespace) -> int:
    client = QueryliftClient(
        settings.kafka_bootstrap_servers or "",
        prefix=settings.topic_prefix,
        partitions=settings.topic_partitions,
        fetch_max_wait_ms=settings.fetch_wait_ms,
    )
    conversation = args.conversation or f"cli-{uuid.uuid4().hex[:12]}"
    await client.start()
    try:
        outcome = await client.ask(
            args.project,
            args.question,
            conversation_id=conversation,
            user_id=args.user,
            timeout_s=args.timeout,
        )
    except TimeoutError:
        message = (
            f"No answer within {args.timeout:.0f} s. The consumers may still be starting or busy "
            "(`querylift status`); ask again, or give --timeout more seconds."
        )
        if args.json:
            print(json.dumps({"error": {"code": "timeout", "message": message}}))
        else:
            err.print(f"[red]{message}[/]")
        return exit_codes.TIMED_OUT
    finally:
        await client.stop()
    if isinstance(outcome, ChatError):
        return _print_error(outcome, args.json)
    return _print_answer(settings, outcome, conversation, args.json)


def _print_error(error: ChatError, as_json: bool) -> int:
    code = exit_codes.UNKNOWN if error.code == ErrorCode.unknown_project else exit_codes.NOT_ANSWERED
    if as_json:
        print(json.dumps({"error": error.model_dump(mode="json")}))
    else:
        err.print(f"[red]Not answered ({error.code.value}):[/] {error.message}")
        if error.sql:
            err.print(f"last SQL tried: {error.sql}")
    return code


def _print_answer(settings: Settings, answer: ChatAnswer, conversation: str, as_json: bool) -> int:
    confidence = answer_confidence(answer)
    chart = chart_file(settings, answer)
    if as_json:
        body = {
            "answer": answer.model_dump(mode="json"),
            "confidence": confidence,
            "from_verified_example": answer.sql_source == "example",
            "chart_png": str(chart) if chart else None,
        }
        print(json.dumps(body))
        return exit_codes.OK
    out.print(f"[bold]{answer.answer_text}[/]")
    out.print(f"[dim]SQL:[/] {answer.sql}")
    if answer.columns:
        table = Table(*answer.columns)
        for row in answer.rows_preview[:SHOWN_ROWS]:
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)
        if answer.row_count > SHOWN_ROWS:
            more = " (cut at the row limit)" if answer.truncated else ""
            out.print(f"[dim]{answer.row_count} rows{more}, first {SHOWN_ROWS} shown[/]")
    if chart:
        out.print(f"chart ({answer.chart.type.value if answer.chart else ''}): {chart}")
    source = (
        "a verified example of this project" if answer.sql_source == "example" else f"model {answer.model}"
    )
    out.print(f"confidence {confidence:.2f} ({confidence_words(confidence)}); SQL from {source}")
    for i, suggestion in enumerate(answer.suggestions, 1):
        out.print(f"next {i}: {suggestion}")
    out.print(f"answer id {answer.event_id}  (conversation {conversation})")
    out.print(
        f'[dim]judge it: querylift feedback {answer.event_id} --rating 5 | --thumbs down | --correct-sql "…"; '
        f'follow up: querylift ask {answer.project_id} "…" --conversation {conversation}[/]'
    )
    return exit_codes.OK
