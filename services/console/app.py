"""The review console's web app (Starlette, server-rendered Jinja2 pages).

Pages per project: the stream of answers (with an ask form), one answer (SQL, rows, chart, suggestions,
thumbs, rating, correction), the review queue, the learning chart and the adapter registry. Forms publish
chat.question, chat.feedback and model.updated like any upstream product; every read is filtered by the
project in the URL.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from events import ChatFeedback, ChatQuestion, Event
from services.console import queries
from services.console.corrections import CorrectionTrial, try_correction
from services.console.learning_chart import render_learning_png
from services.console.review import PATTERN_LABELS, PATTERN_STATUSES, confidence_words
from services.console.security import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, Guard
from services.core import model_registry as registry
from services.core.customer_db import CustomerDatabases
from services.core.projects import Project, list_projects, load_project
from services.generation.chart import render_chart_png
from services.training.announce import serving_changed

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
#: Who the console's events say judged or asked (the console has no user accounts).
CONSOLE_USER = "console"


class Publisher(Protocol):
    async def publish(self, event: Event) -> None: ...


@dataclass
class ConsoleDeps:
    pool: asyncpg.Pool
    publisher: Publisher
    databases: CustomerDatabases
    guard: Guard
    sql_timeout_s: float = 10.0
    row_limit: int = 1000
    default_base_model: str = "smollm2-135m-instruct"
    #: How long the page of a question keeps waiting for its answer.
    answer_wait_s: float = 300.0


class _Access(BaseHTTPMiddleware):
    def __init__(self, app: Callable[..., Awaitable[None]], guard: Guard) -> None:
        super().__init__(app)
        self.guard = guard

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if not self.guard.host_allowed(request):
            return PlainTextResponse("This console answers on 127.0.0.1 or localhost only.", status_code=400)
        if request.url.path != "/login" and not self.guard.signed_in(request):
            if request.method == "GET":
                return RedirectResponse("/login", status_code=303)
            return PlainTextResponse("Sign in first.", status_code=401)
        return await call_next(request)


class ConsoleViews:
    def __init__(self, deps: ConsoleDeps) -> None:
        self.deps = deps
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        self.templates.env.globals.update(
            confidence_words=confidence_words,
            pattern_labels=PATTERN_LABELS,
            pattern_statuses=PATTERN_STATUSES,
        )

    # --- helpers -----------------------------------------------------------------------------------
    def page(self, request: Request, name: str, status_code: int = 200, **context: object) -> Response:
        nonce, new = self.deps.guard.nonce(request)
        context.update(csrf_field=CSRF_FIELD, csrf_token=self.deps.guard.form_token(nonce))
        response = self.templates.TemplateResponse(request, name, context, status_code=status_code)
        if new:
            response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="strict")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'"
        return response

    async def form(self, request: Request) -> FormData:
        """The submitted form, once its CSRF token is checked (every POST goes through here)."""
        form = await request.form()
        submitted = form.get(CSRF_FIELD)
        if not isinstance(submitted, str) or not self.deps.guard.form_allowed(request, submitted):
            raise HTTPException(403, "This form expired or came from another site; reload the page.")
        return form

    async def project(self, request: Request) -> Project:
        project_id = str(request.path_params["project"])
        project = await load_project(self.deps.pool, project_id) if _PROJECT.match(project_id) else None
        if project is None:
            raise HTTPException(404, f"No project {project_id!r}.")
        return project

    @staticmethod
    def _uuid(value: str) -> uuid.UUID:
        try:
            return uuid.UUID(value)
        except ValueError:
            raise HTTPException(404, "No such answer.") from None

    async def answer_or_404(self, project: Project, answer_id: str) -> queries.AnswerView:
        view = await queries.answer(self.deps.pool, project.id, self._uuid(answer_id))
        if view is None:
            raise HTTPException(404, "No such answer in this project.")
        return view

    # --- sign-in -----------------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self.page(request, "login.html", error=None)
        form = await self.form(request)
        offered = form.get("token")
        if not isinstance(offered, str) or not self.deps.guard.token_matches(offered):
            return self.page(request, "login.html", status_code=401, error="That is not the console's token.")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, self.deps.guard.session_value(), httponly=True, samesite="strict")
        return response

    # --- pages -------------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return self.page(request, "index.html", projects=await list_projects(self.deps.pool))

    async def answers(self, request: Request) -> Response:
        project = await self.project(request)
        recent = await queries.recent_answers(self.deps.pool, project.id)
        return self.page(request, "answers.html", project=project, answers=recent, tab="answers")

    async def ask(self, request: Request) -> Response:
        project = await self.project(request)
        form = await self.form(request)
        text = str(form.get("question") or "").strip()
        if not text or len(text) > 4000:
            raise HTTPException(400, "A question needs 1 to 4000 characters.")
        conversation = str(form.get("conversation") or "").strip()[:128] or f"console-{uuid.uuid4().hex[:12]}"
        question = ChatQuestion(
            project_id=project.id, conversation_id=conversation, user_id=CONSOLE_USER, question=text
        )
        await self.deps.publisher.publish(question)
        log.info(
            "console question published", extra={"project_id": project.id, "event_id": str(question.event_id)}
        )
        return RedirectResponse(
            f"/projects/{project.id}/questions/{question.event_id}?since={int(time.time())}", status_code=303
        )

    async def question(self, request: Request) -> Response:
        project = await self.project(request)
        question_id = self._uuid(str(request.path_params["question_id"]))
        answer_id = await queries.answer_id_for_question(self.deps.pool, project.id, question_id)
        if answer_id is not None:
            return RedirectResponse(f"/projects/{project.id}/answers/{answer_id}", status_code=303)
        try:
            since = float(request.query_params.get("since", ""))
        except ValueError:
            since = time.time()
        waited = max(0.0, time.time() - since)
        asked = await queries.question_asked(self.deps.pool, project.id, question_id)
        return self.page(
            request,
            "waiting.html",
            project=project,
            question=asked,
            waited=int(waited),
            given_up=waited > self.deps.answer_wait_s,
            tab="answers",
        )

    async def answer(
        self, request: Request, *, trial: CorrectionTrial | None = None, sent: str | None = None
    ) -> Response:
        project = await self.project(request)
        view = await self.answer_or_404(project, str(request.path_params["answer_id"]))
        return self.page(
            request,
            "answer.html",
            status_code=422 if trial is not None and not trial.ok else 200,
            project=project,
            answer=view,
            trial=trial,
            sent=sent or request.query_params.get("sent"),
            tab="answers",
        )

    async def chart(self, request: Request) -> Response:
        project = await self.project(request)
        view = await self.answer_or_404(project, str(request.path_params["answer_id"]))
        if view.chart is None or not view.columns:
            raise HTTPException(404, "This answer has no chart.")
        chart = view.chart

        def draw() -> bytes:
            with tempfile.TemporaryDirectory() as folder:
                return render_chart_png(
                    chart, view.columns, view.rows_preview, Path(folder) / "chart.png"
                ).read_bytes()

        return Response(await asyncio.to_thread(draw), media_type="image/png")

    async def feedback(self, request: Request) -> Response:
        project = await self.project(request)
        view = await self.answer_or_404(project, str(request.path_params["answer_id"]))
        form = await self.form(request)
        thumbs = form.get("thumbs")
        rating_text = form.get("rating")
        comment = str(form.get("comment") or "").strip()[:4000] or None
        rating = (
            int(rating_text)
            if isinstance(rating_text, str) and rating_text in {"1", "2", "3", "4", "5"}
            else None
        )
        if thumbs not in ("up", "down"):
            thumbs = None
        if thumbs is None and rating is None:
            raise HTTPException(400, "Give thumbs or a rating (a comment goes with one of them).")
        await self.deps.publisher.publish(
            ChatFeedback(
                project_id=project.id,
                answer_id=view.id,
                user_id=CONSOLE_USER,
                thumbs=thumbs,
                rating=rating,
                comment=comment,
            )
        )
        return RedirectResponse(f"/projects/{project.id}/answers/{view.id}?sent=feedback", status_code=303)

    async def correct(self, request: Request) -> Response:
        project = await self.project(request)
        view = await self.answer_or_404(project, str(request.path_params["answer_id"]))
        form = await self.form(request)
        sql = str(form.get("sql") or "").strip()
        if not sql or len(sql) > 20000:
            raise HTTPException(400, "A corrected SQL needs 1 to 20000 characters.")
        trial = await try_correction(
            self.deps.pool,
            self.deps.databases,
            project.id,
            sql,
            timeout_s=self.deps.sql_timeout_s,
            row_limit=self.deps.row_limit,
        )
        if not trial.ok:
            return await self.answer(request, trial=trial)
        comment = str(form.get("comment") or "").strip()[:4000] or None
        await self.deps.publisher.publish(
            ChatFeedback(
                project_id=project.id,
                answer_id=view.id,
                user_id=CONSOLE_USER,
                corrected_sql=trial.sql,
                comment=comment,
            )
        )
        return await self.answer(request, trial=trial, sent="correction")

    async def review(self, request: Request) -> Response:
        project = await self.project(request)
        queue = await queries.review_queue(self.deps.pool, project.id, project.dialect)
        return self.page(request, "review.html", project=project, queue=queue, tab="review")

    async def learning(self, request: Request) -> Response:
        project = await self.project(request)
        points = await queries.learning(self.deps.pool, project.id, project.dialect)
        return self.page(request, "learning.html", project=project, points=points, tab="learning")

    async def learning_png(self, request: Request) -> Response:
        project = await self.project(request)
        points = await queries.learning(self.deps.pool, project.id, project.dialect)
        png = await asyncio.to_thread(render_learning_png, points, f"{project.id}: learning over time")
        return Response(png, media_type="image/png")

    async def models(self, request: Request, *, problem: str | None = None) -> Response:
        project = await self.project(request)
        versions = await registry.list_versions(self.deps.pool, project.id)
        serving = await registry.active_and_canary(self.deps.pool, project.id)
        arms = await queries.arm_figures(self.deps.pool, project.id)
        return self.page(
            request,
            "models.html",
            status_code=409 if problem else 200,
            project=project,
            versions=versions,
            serving=serving,
            arms=arms,
            problem=problem,
            done=request.query_params.get("done"),
            tab="models",
        )

    async def promote(self, request: Request) -> Response:
        project = await self.project(request)
        form = await self.form(request)
        try:
            version = int(str(form.get("version")))
        except ValueError:
            raise HTTPException(400, "Which version?") from None
        try:
            promoted = await registry.promote(self.deps.pool, project.id, version)
        except registry.RegistryError as exc:
            return await self.models(request, problem=str(exc))
        await self.deps.publisher.publish(serving_changed(project.id, promoted, self.deps.default_base_model))
        return RedirectResponse(f"/projects/{project.id}/models?done=promoted", status_code=303)

    async def rollback(self, request: Request) -> Response:
        project = await self.project(request)
        await self.form(request)
        active = await registry.rollback(self.deps.pool, project.id)
        await self.deps.publisher.publish(serving_changed(project.id, active, self.deps.default_base_model))
        return RedirectResponse(f"/projects/{project.id}/models?done=rolled-back", status_code=303)

    async def error_page(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return HTMLResponse(
            self.templates.get_template("error.html").render(status=exc.status_code, message=exc.detail),
            status_code=exc.status_code,
        )


def create_app(deps: ConsoleDeps) -> Starlette:
    views = ConsoleViews(deps)
    p = "/projects/{project}"
    routes = [
        Route("/", views.index),
        Route("/login", views.login, methods=["GET", "POST"]),
        Route(p, views.answers),
        Route(f"{p}/ask", views.ask, methods=["POST"]),
        Route(p + "/questions/{question_id}", views.question),
        Route(p + "/answers/{answer_id}", views.answer),
        Route(p + "/answers/{answer_id}/chart.png", views.chart),
        Route(p + "/answers/{answer_id}/feedback", views.feedback, methods=["POST"]),
        Route(p + "/answers/{answer_id}/correct", views.correct, methods=["POST"]),
        Route(f"{p}/review", views.review),
        Route(f"{p}/learning", views.learning),
        Route(f"{p}/learning.png", views.learning_png),
        Route(f"{p}/models", views.models),
        Route(f"{p}/models/promote", views.promote, methods=["POST"]),
        Route(f"{p}/models/rollback", views.rollback, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(_Access, guard=deps.guard)],
        exception_handlers={HTTPException: views.error_page},
    )
