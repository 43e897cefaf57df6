"""One results document from several runs of ``querylift bench accuracy`` on the same data.

Strategies are measured in separate runs when one of them needs the machine for long (LoRA training on a
CPU); merging keeps each run's own meta (command, settings, date, timings) under ``meta.runs`` and takes every
strategy's entry as that run produced it. A strategy present in two runs keeps the later file's entry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.accuracy.report import predictions_path


class MergeError(ValueError):
    """The runs cannot be merged (different models, questions or history)."""


def merge_documents(documents: list[dict[str, Any]]) -> dict[str, Any]:
    if not documents:
        raise MergeError("nothing to merge")
    models = {d.get("meta", {}).get("model") for d in documents}
    if len(models) > 1:
        raise MergeError(f"runs used different models: {sorted(map(str, models))}")
    merged: dict[str, Any] = {
        "meta": {
            "model": documents[0]["meta"].get("model"),
            "merged_from": len(documents),
            "runs": [d.get("meta", {}) for d in documents],
        },
        "projects": {},
    }
    for document in documents:
        for name, project in document.get("projects", {}).items():
            into = merged["projects"].setdefault(
                name, {k: v for k, v in project.items() if k != "strategies"}
            )
            if into.get("test_used") != project.get("test_used") or into.get("history") != project.get(
                "history"
            ):
                raise MergeError(f"project {name}: runs answered different test questions or history")
            into.setdefault("strategies", {}).update(project.get("strategies", {}))
    return merged


def merge_files(inputs: list[Path], out: Path) -> dict[str, Any]:
    documents = [json.loads(path.read_text(encoding="utf-8")) for path in inputs]
    merged = merge_documents(documents)
    lines: list[str] = []
    for path in inputs:
        predictions = predictions_path(path)
        if predictions.is_file():
            lines += [line for line in predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
    out.parent.mkdir(parents=True, exist_ok=True)
    if lines:
        predictions_path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
        merged["meta"]["predictions"] = str(predictions_path(out))
    out.write_text(json.dumps(merged, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return merged
