"""What a new user does, as a person would, on the real pipeline with a scripted model: ``querylift up``,
``querylift project add`` on a SQLite file of their own, ``querylift ask`` and ``querylift feedback`` in a
second terminal, then the review console in a real headless browser (Debian's chromium driven by
playwright): ask, see the answer, correct it, see the corrected example verified and used by the next
similar question. Screenshots of the main pages are written to ``QUERYLIFT_SCREENSHOTS`` (``make
screenshots`` points it at docs/screenshots/), else to the test's temporary folder.

Every process is a real one: the embedded broker and PostgreSQL that ``up`` starts, its five consumers, and
each command. The scripted model (QUERYLIFT_LLM_BACKEND=scripted) answers every question with the same
SQL, the total count of books, so what the project learns shows in the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.cli import exit_codes
from services.infra.embedded import free_port

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCRIPTED_SQL = "SELECT COUNT(*) AS books FROM books"
PROJECT = "library"
BOOKS = [
    ("The Hobbit", "Tolkien", "fantasy", 1937),
    ("The Fellowship of the Ring", "Tolkien", "fantasy", 1954),
    ("The Silmarillion", "Tolkien", "fantasy", 1977),
    ("Mort", "Pratchett", "fantasy", 1987),
    ("Small Gods", "Pratchett", "fantasy", 1992),
    ("Dune", "Herbert", "science fiction", 1965),
]

pytestmark = pytest.mark.slow


def make_library(path: Path) -> None:
    """The user's own database: a small library."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE books (book_id INTEGER PRIMARY KEY, title TEXT, author TEXT, genre TEXT, year INTEGER)"
        )
        conn.execute(
            "CREATE TABLE loans (loan_id INTEGER PRIMARY KEY, book_id INTEGER REFERENCES books(book_id), member TEXT, returned INTEGER)"
        )
        conn.executemany("INSERT INTO books (title, author, genre, year) VALUES (?, ?, ?, ?)", BOOKS)
        conn.executemany(
            "INSERT INTO loans (book_id, member, returned) VALUES (?, ?, ?)", [(1, "ann", 0), (4, "bob", 1)]
        )


@dataclass
class Terminal:
    """Runs ``querylift`` commands the way a user's shell would, in the user's folder."""

    cwd: Path
    env: dict[str, str]

    def run(self, *args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli.main", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", *args],
            cwd=self.cwd,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )


def user_env(data_dir: Path, metrics_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUERYLIFT_") and k != "DATABASE_URL"}
    env.update(
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        QUERYLIFT_DATA_DIR=str(data_dir),
        QUERYLIFT_LLM_BACKEND="scripted",
        QUERYLIFT_SCRIPTED_SQL=SCRIPTED_SQL,
        QUERYLIFT_METRICS_PORT=str(metrics_port),
        QUERYLIFT_TOPIC_PARTITIONS="2",
        QUERYLIFT_TRAINING_THRESHOLD="1000",
        QUERYLIFT_LOG_JSON="false",
    )
    return env


def wait_for(check, timeout_s: float, what: str, log: Path | None = None):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} not within {timeout_s:.0f} s\n{tail}")


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _free_run_of_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports below the kernel's ephemeral range: a run starting at an
    ephemeral port (free_port's) can take in the port the embedded broker is given next, and the consumer whose
    metrics port that is then fails to start."""
    for base in range(21000, 32000, count + 1):
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports")


@pytest.fixture(scope="module")
def terminal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminal]:
    home = tmp_path_factory.mktemp("user")
    make_library(home / "library.sqlite")
    base = _free_run_of_ports(5)
    ports = range(base, base + 5)
    shell = Terminal(home, user_env(home / ".querylift", base))
    log = home / "up.log"
    up = shell.start("up", log=log)
    try:
        wait_for(lambda: (home / ".querylift" / "running.json").exists(), 180, "querylift up", log)
        wait_for(lambda: all(healthy(p) for p in ports), 240, "the five consumers", log)
        added = shell.run("project", "add", PROJECT, "--database", f"sqlite:///{home / 'library.sqlite'}")
        assert added.returncode == 0, added.stdout + added.stderr
        assert "2 tables" in added.stdout
        yield shell
    finally:
        up.send_signal(signal.SIGINT)  # what Ctrl-C does: consumers, broker and PostgreSQL stop in order
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
    assert not (home / ".querylift" / "running.json").exists()


def ask_json(shell: Terminal, question: str, *more: str) -> dict[str, object]:
    done = shell.run("ask", PROJECT, question, "--json", *more)
    assert done.returncode == exit_codes.OK, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_ask_and_feedback_from_the_command_line_scripted_llm(terminal: Terminal) -> None:
    shown = terminal.run("ask", PROJECT, "how many books are there")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    text = shown.stdout
    assert SCRIPTED_SQL in text and "6" in text and "confidence 0.45" in text and "model scripted" in text
    chart = next(line for line in text.splitlines() if line.startswith("chart"))
    assert Path(chart.split(": ", 1)[1].strip()).read_bytes().startswith(b"\x89PNG")
    answer_id = next(line.split()[2] for line in text.splitlines() if line.startswith("answer id"))

    judged = terminal.run("feedback", answer_id, "--rating", "5", "--comment", "right")
    assert judged.returncode == 0, judged.stdout + judged.stderr
    assert "example is verified" in judged.stdout

    # The same question again is answered from the verified example, without the model.
    again = ask_json(terminal, "how many books are there")
    assert again["from_verified_example"] is True and again["confidence"] == 0.95
    # A neighbouring question suggests the verified one: the project answers it well.
    other = ask_json(terminal, "how many fantasy books are there", "--conversation", "c-1")
    answer = other["answer"]
    assert isinstance(answer, dict)
    assert answer["conversation_id"] == "c-1" and "how many books are there" in answer["suggestions"]

    refused = terminal.run("feedback", str(answer["event_id"]), "--correct-sql", "DELETE FROM books")
    assert refused.returncode == exit_codes.NOT_ANSWERED and "not sent" in refused.stderr.lower()
    corrected = terminal.run(
        "feedback",
        str(answer["event_id"]),
        "--correct-sql",
        "SELECT COUNT(*) AS books FROM books WHERE genre = 'fantasy'",
    )
    assert corrected.returncode == 0, corrected.stdout + corrected.stderr
    assert "checked and run: 1 row" in corrected.stdout and "verified" in corrected.stdout


def test_clear_messages_and_exit_codes_when_something_is_missing_scripted_llm(
    terminal: Terminal, tmp_path: Path
) -> None:
    unknown = terminal.run("ask", "no-such-project", "how many books")
    assert (
        unknown.returncode == exit_codes.UNKNOWN and "querylift project add no-such-project" in unknown.stderr
    )
    late = terminal.run("ask", PROJECT, "which member borrowed the most books", "--timeout", "0.01")
    assert late.returncode == exit_codes.TIMED_OUT and "No answer within" in late.stderr
    nothing = terminal.run("feedback", "00000000-0000-4000-8000-000000000000", "--thumbs", "up", "--no-wait")
    assert nothing.returncode == exit_codes.UNKNOWN and "No answer" in nothing.stderr
    empty = terminal.run("feedback", "00000000-0000-4000-8000-000000000000", "--comment", "only words")
    assert empty.returncode == exit_codes.UNKNOWN and "--rating" in empty.stderr
    # Another folder, where nothing was started.
    elsewhere = Terminal(tmp_path, {**terminal.env, "QUERYLIFT_DATA_DIR": str(tmp_path / ".querylift")})
    for command in (
        ("ask", PROJECT, "how many books"),
        ("feedback", "00000000-0000-4000-8000-000000000000", "--thumbs", "up"),
        ("console",),
    ):
        down = elsewhere.run(*command)
        assert down.returncode == exit_codes.NOT_RUNNING, command
        assert "querylift up" in down.stderr, command


def screenshot_dir(tmp_path: Path) -> Path:
    configured = os.environ.get("QUERYLIFT_SCREENSHOTS")
    folder = Path(configured) if configured else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _browser_missing() -> str | None:
    if shutil.which("chromium") is None:
        return "chromium is not installed (apt-get install chromium; `make test` does it as root): browser test skipped"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[dev]'): browser test skipped"
    return None


BROWSER_MISSING = _browser_missing()


@pytest.mark.skipif(BROWSER_MISSING is not None, reason=BROWSER_MISSING or "")
async def test_console_flow_in_a_browser_scripted_llm(terminal: Terminal, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    shots = screenshot_dir(tmp_path)
    port = free_port()
    log = tmp_path / "console.log"
    server = terminal.start("console", "--port", str(port), log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_for, lambda: _answers(base), 60, "the console", log)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1100, "height": 800})
            page.set_default_timeout(120_000)
            await page.goto(base + "/")
            await page.click(f"text={PROJECT}")
            await page.fill("input[name=question]", "how many books by Tolkien")
            await page.click("button:text('Ask')")
            # The waiting page reloads itself until the answer is in.
            await page.wait_for_selector("#answer-text")
            assert await page.inner_text("#sql") == SCRIPTED_SQL
            assert "6" in await page.inner_text("#answer-text")
            await page.screenshot(path=str(shots / "answer.png"))

            await page.fill("#corrected-sql", "SELECT COUNT(*) AS books FROM books WHERE author = 'Tolkien'")
            await page.click("button:text('Check, run and send correction')")
            correction = await page.inner_text("#correction")
            assert "Correction checked and run: 1 row" in correction and "3" in correction
            await page.screenshot(path=str(shots / "correction.png"))
            answer_url = page.url.removesuffix("/correct")
            for _ in range(120):
                await page.goto(answer_url)
                if "example verified" in await page.inner_text("#example-status"):
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError("the corrected example was not verified")

            # The next similar question is answered from the corrected example, not by the model.
            await page.goto(f"{base}/projects/{PROJECT}")
            await page.fill("input[name=question]", "how many books by Pratchett")
            await page.click("button:text('Ask')")
            await page.wait_for_selector("#answer-text")
            assert await page.is_visible("#from-example")
            assert "2" in await page.inner_text("#answer-text")
            assert "author = 'Pratchett'" in await page.inner_text("#sql")
            assert "how many books by Tolkien" in await page.inner_text("main")
            await page.screenshot(path=str(shots / "answer-from-example.png"))

            for name, path in (
                ("answers", ""),
                ("review", "/review"),
                ("learning", "/learning"),
                ("models", "/models"),
            ):
                await page.goto(f"{base}/projects/{PROJECT}{path}")
                await page.screenshot(path=str(shots / f"{name}.png"), full_page=name == "answers")
            learning = await page.goto(f"{base}/projects/{PROJECT}/learning")
            assert learning is not None and learning.ok
            assert "answered from a verified example" in await page.inner_text("#learning")
            await browser.close()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    for name in ("answer", "correction", "answer-from-example", "answers", "review", "learning", "models"):
        assert (shots / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def _answers(base: str) -> bool:
    try:
        return httpx.get(base + "/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
