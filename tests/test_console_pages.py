"""The review console's pages and forms on the real system of record, with a publisher that records what the
console would send to Kafka (the consumers are not the subject here; tests/test_try_it_yourself.py runs the
console on the whole pipeline in a browser)."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from starlette.routing import Route

from events import ChartSpec, ChatAnswer, ChatFeedback, ChatQuestion, Event, ModelUpdated
from services.console.app import ConsoleDeps, create_app
from services.console.security import Guard, binding_problem
from services.core import model_registry as registry
from services.core.answers import store_answer, store_answer_details
from services.core.customer_db import CustomerDatabases
from services.query.register import register_project
from tests.conftest import SAMPLE_DB, unique


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.events.append(event)


def answer_event(project: str, question: str, sql: str, rows: list[list[object]]) -> ChatAnswer:
    return ChatAnswer(
        project_id=project,
        question_event_id=uuid.uuid4(),
        conversation_id="c1",
        user_id="u",
        question=question,
        answer_text=f"{rows[0][0]}",
        sql=sql,
        columns=["n"],
        rows_preview=rows,
        row_count=len(rows),
        chart=ChartSpec(type="number", y=["n"]),  # type: ignore[arg-type]
        model="scripted",
        suggestions=[f"{question} next"],
        confidence=0.6,
    )


@pytest.fixture(scope="module")
async def two_projects(
    pool: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, ChatAnswer, str, ChatAnswer]]:
    folder = tmp_path_factory.mktemp("console")
    found = []
    for name, tier in (("alpha", "gold"), ("beta", "silver")):
        database = folder / f"{name}.sqlite"
        shutil.copy(SAMPLE_DB, database)
        project = unique(name)
        await register_project(pool, project_id=project, database_url=f"sqlite:///{database}")
        sql = f"SELECT COUNT(*) AS n FROM customers WHERE loyalty_tier = '{tier}'"
        event = answer_event(
            project, f"how many {tier} customers does {name} have", sql, [[7 if tier == "gold" else 9]]
        )
        await store_answer(pool, event)
        await store_answer_details(pool, event)
        found += [project, event]
    yield found[0], found[1], found[2], found[3]


@pytest.fixture
async def console(pool: asyncpg.Pool) -> AsyncIterator[tuple[httpx.AsyncClient, RecordingPublisher]]:
    publisher = RecordingPublisher()
    databases = CustomerDatabases()
    app = create_app(ConsoleDeps(pool=pool, publisher=publisher, databases=databases, guard=Guard()))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8400"
    ) as client:
        yield client, publisher
    await databases.close()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert match, "the page has no form token"
    return match.group(1)


async def test_one_projects_answers_never_show_on_another_projects_pages(two_projects, console) -> None:
    alpha, alpha_answer, beta, beta_answer = two_projects
    client, _ = console
    page = (await client.get(f"/projects/{alpha}")).text
    assert alpha_answer.question in page and beta_answer.question not in page
    for path in ("", "/review", "/learning", "/models"):
        text = (await client.get(f"/projects/{beta}{path}")).text
        assert alpha_answer.question not in text and alpha not in text, path
    assert beta_answer.question in (await client.get(f"/projects/{beta}/review")).text
    # Another project's answer id under this project's URL is not found, page, chart and forms alike.
    assert (await client.get(f"/projects/{beta}/answers/{alpha_answer.event_id}")).status_code == 404
    assert (
        await client.get(f"/projects/{beta}/answers/{alpha_answer.event_id}/chart.png")
    ).status_code == 404
    own = await client.get(f"/projects/{alpha}/answers/{alpha_answer.event_id}")
    assert own.status_code == 200 and "SELECT COUNT(*) AS n" in own.text
    token = csrf_of(own.text)
    stolen = await client.post(
        f"/projects/{beta}/answers/{alpha_answer.event_id}/feedback", data={"csrf": token, "thumbs": "up"}
    )
    assert stolen.status_code == 404
    assert (await client.get("/projects/no-such-project")).status_code == 404


async def test_answer_page_shows_rows_chart_confidence_and_suggestions(two_projects, console) -> None:
    alpha, alpha_answer, _, _ = two_projects
    client, _ = console
    page = (await client.get(f"/projects/{alpha}/answers/{alpha_answer.event_id}")).text
    assert "<td>7</td>" in page and "confidence 0.60" in page
    assert f"{alpha_answer.question} next" in page
    chart = await client.get(f"/projects/{alpha}/answers/{alpha_answer.event_id}/chart.png")
    assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG")
    learning = await client.get(f"/projects/{alpha}/learning.png")
    assert learning.status_code == 200 and learning.content.startswith(b"\x89PNG")


async def test_every_form_needs_its_token_and_a_same_site_origin(two_projects, console) -> None:
    alpha, alpha_answer, _, _ = two_projects
    client, publisher = console
    app = client._transport.app  # type: ignore[attr-defined]
    post_paths = [r.path for r in app.routes if isinstance(r, Route) and "POST" in (r.methods or ())]
    assert len(post_paths) == 6  # login, ask, feedback, correct, promote, rollback
    page = await client.get(f"/projects/{alpha}/answers/{alpha_answer.event_id}")
    token = csrf_of(page.text)
    for template in post_paths:
        path = template.replace("{project}", alpha).replace("{answer_id}", str(alpha_answer.event_id))
        missing = await client.post(
            path, data={"thumbs": "up", "question": "q", "sql": "SELECT 1", "version": "1"}
        )
        assert missing.status_code == 403, path
        forged = await client.post(path, data={"csrf": "0" * 64, "thumbs": "up"})
        assert forged.status_code == 403, path
        cross_site = await client.post(
            path, data={"csrf": token, "thumbs": "up"}, headers={"origin": "https://evil.example"}
        )
        assert cross_site.status_code == 403, path
    assert publisher.events == []
    # The page's own token, from the page's own origin, is accepted.
    sent = await client.post(
        f"/projects/{alpha}/answers/{alpha_answer.event_id}/feedback",
        data={"csrf": token, "thumbs": "up"},
        headers={"origin": "http://127.0.0.1:8400"},
    )
    assert sent.status_code == 303
    assert isinstance(publisher.events[-1], ChatFeedback) and publisher.events[-1].thumbs == "up"


async def test_a_correction_is_checked_and_run_before_it_is_sent(two_projects, console) -> None:
    alpha, alpha_answer, _, _ = two_projects
    client, publisher = console
    url = f"/projects/{alpha}/answers/{alpha_answer.event_id}"
    token = csrf_of((await client.get(url)).text)
    refused = await client.post(f"{url}/correct", data={"csrf": token, "sql": "DELETE FROM customers"})
    assert refused.status_code == 422 and "Not sent" in refused.text and "refused" in refused.text
    failing = await client.post(f"{url}/correct", data={"csrf": token, "sql": "SELECT nope FROM customers"})
    assert failing.status_code == 422
    assert not any(isinstance(e, ChatFeedback) and e.corrected_sql for e in publisher.events)
    sql = "SELECT loyalty_tier, COUNT(*) AS n FROM customers GROUP BY loyalty_tier ORDER BY loyalty_tier"
    accepted = await client.post(f"{url}/correct", data={"csrf": token, "sql": sql})
    assert accepted.status_code == 200 and "Correction checked and run" in accepted.text
    assert "<td>gold</td>" in accepted.text  # its rows
    sent = publisher.events[-1]
    assert isinstance(sent, ChatFeedback) and sent.answer_id == alpha_answer.event_id
    assert sent.corrected_sql and "GROUP BY" in sent.corrected_sql and sent.project_id == alpha


async def test_asking_publishes_a_question_and_waits_for_its_answer(two_projects, console) -> None:
    alpha, _, _, _ = two_projects
    client, publisher = console
    token = csrf_of((await client.get(f"/projects/{alpha}")).text)
    asked = await client.post(f"/projects/{alpha}/ask", data={"csrf": token, "question": "how many stores"})
    assert asked.status_code == 303
    question = publisher.events[-1]
    assert isinstance(question, ChatQuestion) and question.project_id == alpha
    assert asked.headers["location"].startswith(f"/projects/{alpha}/questions/{question.event_id}")
    waiting = await client.get(asked.headers["location"])
    assert waiting.status_code == 200 and 'http-equiv="refresh"' in waiting.text


async def test_promote_and_rollback_use_the_registry_and_tell_generation(
    pool: asyncpg.Pool, two_projects, console, tmp_path: Path
) -> None:
    _, _, beta, _ = two_projects
    client, publisher = console
    await registry.register_candidate(
        pool, beta, base_model="smollm2-135m-instruct", adapter_path=str(tmp_path), checksum="c"
    )
    page = await client.get(f"/projects/{beta}/models")
    assert "v1" in page.text and "candidate" in page.text
    token = csrf_of(page.text)
    promoted = await client.post(f"/projects/{beta}/models/promote", data={"csrf": token, "version": "1"})
    assert promoted.status_code == 303
    assert (await registry.active_and_canary(pool, beta)).active.version == 1  # type: ignore[union-attr]
    event = publisher.events[-1]
    assert isinstance(event, ModelUpdated) and event.version == 1 and event.project_id == beta
    missing = await client.post(f"/projects/{beta}/models/promote", data={"csrf": token, "version": "9"})
    assert missing.status_code == 409 and "no model version 9" in missing.text
    rolled = await client.post(f"/projects/{beta}/models/rollback", data={"csrf": token})
    assert rolled.status_code == 303
    assert (await registry.active_and_canary(pool, beta)).active is None
    last = publisher.events[-1]
    assert isinstance(last, ModelUpdated) and last.version is None


async def test_with_a_token_nothing_is_shown_before_sign_in(pool: asyncpg.Pool, two_projects) -> None:
    alpha, _, _, _ = two_projects
    app = create_app(
        ConsoleDeps(
            pool=pool,
            publisher=RecordingPublisher(),
            databases=CustomerDatabases(),
            guard=Guard(token="s3cret-token"),
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.example:8400") as client:
        first = await client.get(f"/projects/{alpha}")
        assert first.status_code == 303 and first.headers["location"] == "/login"
        assert (await client.post(f"/projects/{alpha}/ask", data={"question": "q"})).status_code == 401
        login = await client.get("/login")
        token = csrf_of(login.text)
        wrong = await client.post("/login", data={"csrf": token, "token": "guess"})
        assert wrong.status_code == 401
        right = await client.post("/login", data={"csrf": token, "token": "s3cret-token"})
        assert right.status_code == 303
        assert "s3cret-token" not in right.headers.get("set-cookie", "")
        assert (await client.get(f"/projects/{alpha}")).status_code == 200
    async with httpx.AsyncClient(transport=transport, base_url="http://console.example:8400") as client:
        bearer = await client.get(f"/projects/{alpha}", headers={"authorization": "Bearer s3cret-token"})
        assert bearer.status_code == 200


async def test_without_a_token_only_loopback_hosts_are_served(console) -> None:
    client, _ = console
    assert (await client.get("/", headers={"host": "attacker.example"})).status_code == 400
    assert (await client.get("/", headers={"host": "localhost:8400"})).status_code == 200


def test_serving_beyond_loopback_needs_a_token() -> None:
    assert binding_problem("127.0.0.1", None) is None
    assert binding_problem("::1", None) is None
    assert binding_problem("localhost", None) is None
    problem = binding_problem("0.0.0.0", None)
    assert problem and "QUERYLIFT_CONSOLE_TOKEN" in problem
    assert binding_problem("0.0.0.0", "a-long-token") is None
