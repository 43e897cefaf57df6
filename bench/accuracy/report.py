"""The results table (rich) and the files a run writes: the JSON document and one line per prediction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.accuracy.curve import default_plot_path, plot_learning_curve
from bench.accuracy.options import AccuracyOptions


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _num(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def rows(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(project, strategy, entry) for every result, projects in order, then the pooled 'all' rows."""
    out = []
    for project, summary in document.get("projects", {}).items():
        for strategy, entry in summary.get("strategies", {}).items():
            out.append((project, strategy, entry))
    for strategy, entry in document.get("overall", {}).items():
        out.append(("all", strategy, {"status": "ok", **entry}))
    return out


def results_table(document: dict[str, Any]) -> Table:
    meta = document.get("meta", {})
    table = Table(title=f"Execution accuracy · model {meta.get('model', '?')}")
    for name, justify in (
        ("project", "left"),
        ("strategy", "left"),
        ("n", "right"),
        ("accuracy", "right"),
        ("seen", "right"),
        ("new", "right"),
        ("executes", "right"),
        ("schema ok", "right"),
        ("p50 s", "right"),
        ("p95 s", "right"),
        ("prompt tok", "right"),
        ("from example", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for project, name, entry in rows(document):
        # A variant's name ("product[repair_rounds=0]") is text, not rich markup.
        strategy = escape(name)
        if entry.get("status") != "ok":
            table.add_row(project, strategy, "", escape(f"skipped: {entry.get('reason', '')}"[:60]))
            continue
        table.add_row(
            project,
            strategy,
            str(entry["n"]),
            _pct(entry["accuracy"]),
            _pct(entry["accuracy_pattern_seen"]),
            _pct(entry["accuracy_pattern_new"]),
            _pct(entry["executes"]),
            _pct(entry["schema_valid"]),
            _num(entry["latency_p50_s"]),
            _num(entry["latency_p95_s"]),
            _num(entry["prompt_tokens_mean"], 0),
            _pct(entry.get("from_example")),
        )
    return table


def markdown_table(document: dict[str, Any]) -> str:
    """The same table as Markdown, for bench/README.md."""
    header = (
        "| project | strategy | n | accuracy | pattern seen | pattern new | executes | schema-valid "
        "| p50 s | p95 s | prompt tokens | from example |"
    )
    lines = [header, "|" + "---|" * 12]
    for project, strategy, entry in rows(document):
        if entry.get("status") != "ok":
            lines.append(f"| {project} | {strategy} | skipped: {entry.get('reason', '')} |" + " |" * 9)
            continue
        lines.append(
            f"| {project} | {strategy} | {entry['n']} | {_pct(entry['accuracy'])} "
            f"| {_pct(entry['accuracy_pattern_seen'])} | {_pct(entry['accuracy_pattern_new'])} "
            f"| {_pct(entry['executes'])} | {_pct(entry['schema_valid'])} | {_num(entry['latency_p50_s'])} "
            f"| {_num(entry['latency_p95_s'])} | {_num(entry['prompt_tokens_mean'], 0)} "
            f"| {_pct(entry.get('from_example'))} |"
        )
    return "\n".join(lines)


def predictions_path(out: Path) -> Path:
    return out.with_name(out.stem + ".predictions.jsonl")


def write_results(
    document: dict[str, Any], predictions: list[dict[str, Any]], options: AccuracyOptions
) -> None:
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pred_path = predictions_path(out)
    with pred_path.open("w", encoding="utf-8") as f:
        for p in predictions:
            f.write(json.dumps(p, ensure_ascii=False, default=str) + "\n")
    document.setdefault("meta", {})["predictions"] = str(pred_path)
    if options.learning_curve and document.get("learning_curve"):
        plot = Path(options.plot) if options.plot else default_plot_path(out)
        plot_learning_curve(document, plot)
        document["meta"]["plot"] = str(plot)
    out.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def print_table(document: dict[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        console.width = max(console.width, 132)  # the table is wide; pipes and CI report 80 columns
    console.print(results_table(document))
