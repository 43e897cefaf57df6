"""The learning-over-time chart as a PNG: answers per pattern status (stacked bars) with the share answered
from verified examples and the rating average (lines, right axis) for each group of answers."""

from __future__ import annotations

import io
from collections.abc import Sequence

from services.console.review import PATTERN_LABELS, PATTERN_STATUSES, LearningPoint

_COLOURS = {"example": "#2e7d32", "verified": "#81c784", "new": "#ffb74d", "failed": "#e57373"}


def render_learning_png(points: Sequence[LearningPoint], title: str) -> bytes:
    # A Figure without pyplot: no global state, safe in the server's worker threads.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.add_subplot()
    labels = [f"{p.first}–{p.last}" for p in points]
    xs = list(range(len(points)))
    bottom = [0] * len(points)
    for status in PATTERN_STATUSES:
        heights = [p.by_status.get(status, 0) for p in points]
        ax.bar(xs, heights, bottom=bottom, color=_COLOURS[status], label=PATTERN_LABELS[status])
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel("answers")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("answers, in the order they were given")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    share = ax.twinx()
    share.set_ylim(0, 1.05)
    share.set_ylabel("share / rating ÷ 5")
    share.plot(
        xs, [p.from_examples_share for p in points], color="#1b5e20", marker="o", label="share from examples"
    )
    rated = [
        (x, p.rating_average / 5) for x, p in zip(xs, points, strict=True) if p.rating_average is not None
    ]
    if rated:
        share.plot(
            [x for x, _ in rated], [r for _, r in rated], color="#1565c0", marker="s", label="rating ÷ 5"
        )
    handles, names = ax.get_legend_handles_labels()
    more_handles, more_names = share.get_legend_handles_labels()
    ax.legend(handles + more_handles, names + more_names, fontsize=7, loc="upper left")
    if not points:
        ax.text(0.5, 0.5, "No answers yet", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title[:80], fontsize=11)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
