"""A chart suggestion from the result's shape and the question's wording, and a PNG renderer for it.

The rules are deliberately few: one number → number; a time-like first axis with numbers → line; a share
question over few categories → pie; categories with numbers → bar (a second category becomes the series);
anything else → table.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from events import ChartSpec, ChartType

Kind = Literal["number", "time", "category", "other"]

_MONTHS = {
    m
    for name in (
        "january february march april may june july august september october november december".split()
    )
    for m in (name, name[:3])
}
_TIME_NAME = re.compile(
    r"(^|_|\b)(year|yr|month|mon|date|day|week|quarter|qtr|time|period|hour|ts)s?($|_|\b)", re.I
)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
_QUARTER = re.compile(r"^\d{4}[- ]?Q[1-4]$|^Q[1-4][- ]?\d{4}$", re.I)
_SHARE_WORDS = re.compile(
    r"\b(share|shares|percent|percentage|percentages|proportion|proportions|distribution|breakdown|split|"
    r"fraction|ratio|composition|%)",
    re.I,
)
_PIE_MAX_ROWS = 8


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool)


def _is_time_value(value: Any) -> bool:
    if isinstance(value, dt.date | dt.datetime):
        return True
    if isinstance(value, str):
        text = value.strip()
        return bool(_ISO_DATE.match(text) or _QUARTER.match(text) or text.lower() in _MONTHS)
    return False


def column_kind(name: str, values: Sequence[Any]) -> Kind:
    present = [v for v in values if v is not None]
    if not present:
        return "other"
    if all(_is_time_value(v) for v in present):
        return "time"
    if all(_is_number(v) for v in present):
        # Years, month numbers and the like are numbers a person reads as time when the name says so.
        if _TIME_NAME.search(name) and all(float(v) == int(v) for v in present):
            return "time"
        if re.search(r"(^|_)id$|Id$", name):
            return "category"
        return "number"
    if all(isinstance(v, str | bool) for v in present):
        return "category"
    return "other"


def _spec(
    kind: ChartType,
    *,
    x: str | None = None,
    y: list[str] | None = None,
    series: str | None = None,
    title: str | None = None,
) -> ChartSpec:
    return ChartSpec(type=kind, x=x, y=y or [], series=series, title=title)


def suggest_chart(question: str, columns: list[str], rows: list[list[Any]]) -> ChartSpec:
    title = question.strip()[:120] or None
    if not rows or not columns:
        return _spec(ChartType.table, title=title)
    kinds = [column_kind(c, [r[i] for r in rows if i < len(r)]) for i, c in enumerate(columns)]
    numbers = [c for c, k in zip(columns, kinds, strict=True) if k == "number"]
    times = [c for c, k in zip(columns, kinds, strict=True) if k == "time"]
    categories = [c for c, k in zip(columns, kinds, strict=True) if k == "category"]

    if len(rows) == 1 and len(columns) == 1 and numbers:
        return _spec(ChartType.number, y=numbers, title=title)
    if times and numbers and len(rows) > 1:
        series = categories[0] if len(categories) == 1 and len(numbers) == 1 else None
        return _spec(ChartType.line, x=times[0], y=numbers, series=series, title=title)
    if len(categories) == 1 and len(numbers) == 1 and len(rows) > 1:
        if len(rows) <= _PIE_MAX_ROWS and _SHARE_WORDS.search(question):
            return _spec(ChartType.pie, x=categories[0], y=numbers, title=title)
        return _spec(ChartType.bar, x=categories[0], y=numbers, title=title)
    if len(categories) == 1 and numbers and len(rows) > 1:
        return _spec(ChartType.bar, x=categories[0], y=numbers, title=title)
    if len(categories) == 2 and len(numbers) == 1 and len(rows) > 1:
        return _spec(ChartType.bar, x=categories[0], y=numbers, series=categories[1], title=title)
    return _spec(ChartType.table, title=title)


# --- rendering ---------------------------------------------------------------------------------------------


def _num(value: Any) -> float:
    return float(value) if value is not None else 0.0


def _label(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def render_chart_png(spec: ChartSpec, columns: list[str], rows: list[list[Any]], path: Path | str) -> Path:
    """Draw ``spec`` for the result into a PNG file at ``path``."""
    # Figure without pyplot: no global state, no GUI backend, safe in worker threads.
    from matplotlib.figure import Figure

    out = Path(path)
    index = {c: i for i, c in enumerate(columns)}
    fig = Figure(figsize=(7, 4.2), dpi=100)
    ax = fig.add_subplot()
    kind = spec.type
    x_col = spec.x
    if kind == ChartType.number and spec.y:
        value = rows[0][index[spec.y[0]]] if rows else None
        ax.axis("off")
        ax.text(0.5, 0.55, _label(value), ha="center", va="center", fontsize=40)
        ax.text(0.5, 0.2, spec.y[0], ha="center", va="center", fontsize=12, color="gray")
    elif kind in (ChartType.line, ChartType.bar) and x_col is not None and spec.y:
        xi = index[x_col]
        groups: dict[str, list[list[Any]]] = {}
        if spec.series:
            si = index[spec.series]
            for r in rows:
                groups.setdefault(_label(r[si]), []).append(r)
        else:
            groups = {"": list(rows)}
        labels = list(dict.fromkeys(_label(r[xi]) for r in rows))
        positions = {label: i for i, label in enumerate(labels)}
        bars = sum(len(spec.y) for _ in groups) or 1
        width = 0.8 / bars
        n = 0
        for group, group_rows in groups.items():
            for y in spec.y:
                yi = index[y]
                xs = [positions[_label(r[xi])] for r in group_rows]
                ys = [_num(r[yi]) for r in group_rows]
                name = " / ".join(p for p in (group, y if len(spec.y) > 1 or not group else "") if p) or y
                if kind == ChartType.line:
                    ax.plot(xs, ys, marker="o", label=name)
                else:
                    ax.bar([x - 0.4 + width * (n + 0.5) for x in xs], ys, width=width, label=name)
                n += 1
        step = max(1, len(labels) // 12)
        ax.set_xticks(range(0, len(labels), step))
        ax.set_xticklabels(labels[::step], rotation=30, ha="right")
        ax.set_xlabel(x_col)
        if len(spec.y) == 1:
            ax.set_ylabel(spec.y[0])
        if n > 1:
            ax.legend(fontsize=8)
    elif kind == ChartType.pie and x_col is not None and spec.y:
        xi, yi = index[x_col], index[spec.y[0]]
        ax.pie([max(0.0, _num(r[yi])) for r in rows], labels=[_label(r[xi]) for r in rows], autopct="%1.0f%%")
        ax.axis("equal")
    else:
        ax.axis("off")
        shown = rows[:15]
        if shown:
            table = ax.table(
                cellText=[[_label(v)[:24] for v in r] for r in shown], colLabels=columns, loc="center"
            )
            table.auto_set_font_size(False)
            table.set_fontsize(8)
        else:
            ax.text(0.5, 0.5, "No rows", ha="center", va="center")
    if spec.title:
        fig.suptitle(spec.title[:80], fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


__all__ = ["column_kind", "render_chart_png", "suggest_chart"]
