"""The learning curve: execution accuracy against the amount of history replayed, one line per strategy."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def default_plot_path(out: Path) -> Path:
    return out.with_name(out.stem + ".learning_curve.png")


def plot_learning_curve(document: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, dict[str, list[dict[str, Any]]]] = document.get("learning_curve", {})
    projects = list(curves)
    if not projects:
        raise ValueError("the results have no learning curve to plot")
    fig, axes = plt.subplots(1, len(projects), figsize=(6.5 * len(projects), 4.5), squeeze=False)
    model = document.get("meta", {}).get("model", "")
    for ax, project in zip(axes[0], projects, strict=True):
        for strategy, points in curves[project].items():
            xs = [p["history_items"] for p in points]
            ys = [100 * (p["accuracy"] or 0.0) for p in points]
            ax.plot(xs, ys, marker="o", label=strategy)
        n = max((p["n"] for pts in curves[project].values() for p in pts), default=0)
        ax.set_title(f"{project} ({n} test questions)")
        ax.set_xlabel("history items replayed")
        ax.set_ylabel("execution accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"Accuracy vs history · {model}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
