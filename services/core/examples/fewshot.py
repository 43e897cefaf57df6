"""Curated few-shot libraries per domain: demonstrations for projects that have few examples of their own.

Each ``fewshot_data/<domain>.jsonl`` line is ``{id, question, sql, schema: {tables: [{name, columns}]}}``
with SQLite-compatible standard SQL. A project's own verified examples always take precedence: the caller
(the retrieval consumer) puts project examples first and only fills the remaining room with library ones.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from events.internal import ContextExample
from services.core.examples.embedder import Embedder
from services.core.examples.masking import mask_question, split_identifier, sql_skeleton, word_forms
from services.core.examples.selection import Candidate, select_from_candidates
from services.core.schema import Column, SchemaInfo, Table

DOMAINS = ("survey", "ecommerce", "crm", "analytics", "generic")

#: Identifier words that point at a domain. Table names count double: they say what the database is about.
DOMAIN_KEYWORDS: dict[str, frozenset[str]] = {
    "survey": frozenset(
        {"respondent", "answer", "question", "response", "survey", "questionnaire", "choice"}
    ),
    "ecommerce": frozenset({"order", "product", "cart", "customer", "price", "sku", "shipment", "inventory"}),
    "crm": frozenset({"lead", "account", "contact", "opportunity", "deal", "pipeline", "activity"}),
    "analytics": frozenset({"event", "session", "pageview", "user", "metric", "visit", "click", "funnel"}),
}
_MIN_DOMAIN_SCORE = 3
_CANDIDATES = 40
_CHOSEN_CACHE = 4096
_DOMAIN_BONUS = 0.05  # same similarity: an example from the project's own domain is the better demonstration


def detect_domain(schema: SchemaInfo) -> str:
    """The library domain whose keywords best match the schema's table and column names, else 'generic'."""
    scores = dict.fromkeys(DOMAIN_KEYWORDS, 0)
    for table in schema.tables:
        weighted = [(w, 2) for w in split_identifier(table.name)]
        weighted += [(w, 1) for c in table.columns for w in split_identifier(c.name)]
        for word, weight in weighted:
            forms = word_forms(word)
            for domain, keywords in DOMAIN_KEYWORDS.items():
                if forms & keywords:
                    scores[domain] += weight
    best = max(scores, key=lambda d: scores[d])
    return best if scores[best] >= _MIN_DOMAIN_SCORE else "generic"


@dataclass(frozen=True)
class LibraryExample:
    id: str
    domain: str
    question: str
    sql: str
    schema: SchemaInfo
    masked_question: str
    skeleton: str


def _schema_from(data: dict[str, Any]) -> SchemaInfo:
    tables = [
        Table(
            name=t["name"], columns=[Column(name=c["name"], type=c.get("type", "TEXT")) for c in t["columns"]]
        )
        for t in data["tables"]
    ]
    return SchemaInfo(dialect="sqlite", tables=tables)


def default_data_dir() -> Path:
    return Path(str(resources.files("services.core.examples").joinpath("fewshot_data")))


@lru_cache(maxsize=4)
def load_library(data_dir: Path) -> tuple[LibraryExample, ...]:
    """Every library example, parsed once per process."""
    examples: list[LibraryExample] = []
    for domain in DOMAINS:
        path = data_dir / f"{domain}.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            raw = json.loads(line)
            schema = _schema_from(raw["schema"])
            examples.append(
                LibraryExample(
                    id=raw["id"],
                    domain=domain,
                    question=raw["question"],
                    sql=raw["sql"],
                    schema=schema,
                    masked_question=mask_question(raw["question"], schema),
                    skeleton=sql_skeleton(raw["sql"], "sqlite"),
                )
            )
    return tuple(examples)


_VECTORS: dict[tuple[str, str, bool], np.ndarray] = {}
_VECTORS_LOCK = threading.Lock()


class FewshotLibrary:
    """Selects library demonstrations by question similarity, from the project's domain plus 'generic'."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir or default_data_dir()
        self.examples = load_library(self.data_dir)
        self._domains = np.array([e.domain for e in self.examples])
        self._chosen: dict[tuple[str, str, bool, str, int, float], tuple[ContextExample, ...]] = {}
        self._chosen_lock = threading.Lock()  # select() also runs in worker threads

    def domain_examples(self, domain: str) -> list[LibraryExample]:
        return [e for e in self.examples if e.domain == domain]

    def _matrix(self, embedder: Embedder, masked: bool) -> np.ndarray:
        # Shared by every library instance of the process: the library never changes while it runs.
        key = (str(self.data_dir), embedder.name, masked)
        with _VECTORS_LOCK:
            if key not in _VECTORS:
                texts = [e.masked_question if masked else e.question for e in self.examples]
                _VECTORS[key] = embedder.embed(texts)
            return _VECTORS[key]

    def select(
        self,
        question: str,
        domain: str,
        k: int,
        embedder: Embedder,
        *,
        schema: SchemaInfo | None = None,
        diversity: float = 0.3,
    ) -> list[ContextExample]:
        """Up to ``k`` library examples for ``question`` (source='library'), best first.

        With the project's ``schema`` both sides are compared masked (their names differ by construction);
        without it the raw questions are compared.
        """
        if k <= 0 or not self.examples:
            return []
        wanted = {domain if domain in DOMAINS else "generic", "generic"}
        masked = schema is not None
        text = mask_question(question, schema) if schema is not None else question
        key = (text, embedder.name, masked, domain, k, diversity)
        cached = self._chosen.get(key)
        if cached is not None:
            return list(cached)
        query = embedder.embed([text])[0]
        # In float64, as Python floats were: near-ties keep the order they always had.
        similarities = (self._matrix(embedder, masked) @ query).astype(np.float64)
        similarities += np.where(self._domains == domain, _DOMAIN_BONUS, 0.0)
        similarities[~np.isin(self._domains, list(wanted))] = -np.inf
        allowed = int(np.isfinite(similarities).sum())
        # As the vector index does for project examples: only the nearest ones are reranked (a stable sort,
        # so equal similarities stay in library order).
        nearest = np.argsort(-similarities, kind="stable")[: min(_CANDIDATES, allowed)]
        candidates = [
            Candidate(
                example_id=f"library:{self.examples[i].id}",
                question=self.examples[i].question,
                sql=self.examples[i].sql,
                skeleton=self.examples[i].skeleton,
                similarity=float(similarities[i]),
            )
            for i in nearest
        ]
        chosen = select_from_candidates(candidates, k, diversity=diversity)
        found = [
            ContextExample(
                example_id=c.example_id, source="library", question=c.question, sql=c.sql, score=round(s, 4)
            )
            for c, s in chosen
        ]
        # The library never changes while the process runs, and chat questions repeat.
        with self._chosen_lock:
            if len(self._chosen) >= _CHOSEN_CACHE:
                self._chosen.pop(next(iter(self._chosen)))
            self._chosen[key] = tuple(found)
        return found
