"""The examples repository: verified question/SQL pairs of a project, kept in step with the vector index.

An example is *usable* (searchable, trainable) while it is verified, not stale and not rated down. Every
change of usability goes through here so the ``examples`` rows and the vector index never disagree: an
example that stops being usable is deleted from the index, one that becomes usable again is re-upserted.

Embeddings are of the question plus its DAIL-SQL *masked* form (names and values as placeholders), see
``masking.retrieval_text``: the masked half makes questions of the same shape similar.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from services.core.examples.embedder import Embedder
from services.core.examples.index import VectorIndex, parse_vector, vector_literal
from services.core.examples.masking import mask_question, retrieval_text, sql_skeleton, sql_values
from services.core.schema import SchemaInfo
from services.core.sql import referenced_names

log = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("0b7f3c8e-5d6a-4e1f-9c2b-7a4d8e6f1a35")
_USABLE = "verified AND NOT stale AND NOT rated_down"
_REEMBED_BATCH = 128


def example_id_for(project_id: str, *, answer_id: uuid.UUID | None, question: str, sql: str) -> uuid.UUID:
    """A deterministic id, so re-processing the same feedback or import never creates a duplicate."""
    if answer_id is not None:
        return uuid.uuid5(_NAMESPACE, f"answer:{answer_id}")
    return uuid.uuid5(_NAMESPACE, f"{project_id}\n{' '.join(question.split())}\n{' '.join(sql.split())}")


# --- names an SQL statement depends on -----------------------------------------------------------------


def names_for(sql: str, schema: SchemaInfo) -> tuple[list[str], list[str]]:
    """Names via the SQL checker's resolver (one resolver for the whole system)."""
    tables, columns = referenced_names(sql, schema.dialect)
    schema_columns = {t.name.lower(): {c.name.lower() for c in t.columns} for t in schema.tables}
    resolved: set[str] = set()
    for ref in columns:
        if "." in ref:
            resolved.add(ref)
            continue
        # Tie a bare column to its table where the schema makes that unambiguous.
        owners = [t for t in sorted(tables) if ref in schema_columns.get(t, set())]
        resolved.add(f"{owners[0]}.{ref}" if len(owners) == 1 else ref)
    return sorted(tables), sorted(resolved)


def is_valid_for(tables: Sequence[str], columns: Sequence[str], schema: SchemaInfo) -> bool:
    """Whether every table and column an example references still exists in ``schema``.

    A bare column (``name`` whose table could not be told) is valid while one of the example's tables has it.
    """
    schema_tables, schema_columns = schema.names()
    lowered_tables = [t.lower() for t in tables]
    if any(t not in schema_tables for t in lowered_tables):
        return False
    scope = set(lowered_tables) or schema_tables
    for ref in columns:
        table, _, column = ref.lower().rpartition(".")
        if table:
            if (table, column) not in schema_columns:
                return False
        elif not any((t, column) in schema_columns for t in scope):
            return False
    return True


# --- writes ------------------------------------------------------------------------------------------------


@dataclass
class _Derived:
    masked_question: str
    skeleton: str
    tables: list[str]
    columns: list[str]
    vector: np.ndarray


async def _derive(embedder: Embedder, question: str, sql: str, schema: SchemaInfo) -> _Derived:
    # The example's own SQL says which of its question's words are values: masked exactly, as the value index
    # masks a new question's, so the two meet on shape.
    masked = mask_question(question, schema, sql_values(sql, schema.dialect))
    tables, columns = names_for(sql, schema)
    vector = (await asyncio.to_thread(embedder.embed, [retrieval_text(question, masked)]))[0]
    return _Derived(masked, sql_skeleton(sql, schema.dialect), tables, columns, vector)


async def add_verified_example(
    pool: asyncpg.Pool,
    index: VectorIndex,
    embedder: Embedder,
    *,
    project_id: str,
    question: str,
    sql: str,
    source: str,
    quality: float,
    schema: SchemaInfo,
    schema_version_id: int | None,
    answer_id: uuid.UUID | None = None,
    example_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Store a verified pair and index it; returns its id. Adding the same example again changes nothing."""
    example_id = example_id or example_id_for(project_id, answer_id=answer_id, question=question, sql=sql)
    existing = await _existing_id(pool, example_id, answer_id)
    if existing is not None:
        return existing
    derived = await _derive(embedder, question, sql, schema)
    inserted = await pool.fetchval(
        """
        INSERT INTO examples (id, project_id, question, sql, source, answer_id, quality, verified,
                              schema_version_id, tables, columns, masked_question, sql_skeleton,
                              embedding, embedding_model)
        VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8, $9, $10, $11, $12, $13::vector, $14)
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        example_id,
        project_id,
        question,
        sql,
        source,
        answer_id,
        quality,
        schema_version_id,
        derived.tables,
        derived.columns,
        derived.masked_question,
        derived.skeleton,
        vector_literal(derived.vector),
        embedder.name,
    )
    if inserted is None:
        # A concurrent writer inserted the same example (same id or answer) first.
        raced = await _existing_id(pool, example_id, answer_id)
        assert raced is not None
        return raced
    await index.upsert(project_id, [(example_id, derived.vector)])
    log.info(
        "example added", extra={"project_id": project_id, "example_id": str(example_id), "source": source}
    )
    return example_id


async def _existing_id(
    pool: asyncpg.Pool, example_id: uuid.UUID, answer_id: uuid.UUID | None
) -> uuid.UUID | None:
    found: uuid.UUID | None = await pool.fetchval(
        "SELECT id FROM examples WHERE id = $1 OR ($2::uuid IS NOT NULL AND answer_id = $2) LIMIT 1",
        example_id,
        answer_id,
    )
    return found


async def mark_rated_down(
    pool: asyncpg.Pool, index: VectorIndex, project_id: str, answer_id: uuid.UUID
) -> bool:
    """The example made from this answer (if any) is never retrieved or trained on again."""
    ids = [
        r["id"]
        for r in await pool.fetch(
            "UPDATE examples SET rated_down = true, updated_at = now()"
            " WHERE project_id = $1 AND answer_id = $2 RETURNING id",
            project_id,
            answer_id,
        )
    ]
    if ids:
        await index.delete(project_id, ids)
    return bool(ids)


async def apply_correction(
    pool: asyncpg.Pool,
    index: VectorIndex,
    embedder: Embedder,
    *,
    project_id: str,
    answer_id: uuid.UUID,
    question: str,
    corrected_sql: str,
    schema: SchemaInfo,
    schema_version_id: int | None,
    quality: float = 1.0,
) -> uuid.UUID:
    """A user's verified correction replaces the answer's SQL; the example becomes usable with the new SQL."""
    existing = await pool.fetchval(
        "SELECT id FROM examples WHERE project_id = $1 AND answer_id = $2", project_id, answer_id
    )
    if existing is None:
        return await add_verified_example(
            pool,
            index,
            embedder,
            project_id=project_id,
            question=question,
            sql=corrected_sql,
            source="correction",
            quality=quality,
            schema=schema,
            schema_version_id=schema_version_id,
            answer_id=answer_id,
        )
    derived = await _derive(embedder, question, corrected_sql, schema)
    await pool.execute(
        """
        UPDATE examples SET question = $3, sql = $4, source = 'correction', quality = $5, verified = true,
               rated_down = false, stale = false, schema_version_id = $6, tables = $7, columns = $8,
               masked_question = $9, sql_skeleton = $10, embedding = $11::vector, embedding_model = $12,
               trained_in_version = NULL, updated_at = now()
        WHERE project_id = $1 AND id = $2
        """,
        project_id,
        existing,
        question,
        corrected_sql,
        quality,
        schema_version_id,
        derived.tables,
        derived.columns,
        derived.masked_question,
        derived.skeleton,
        vector_literal(derived.vector),
        embedder.name,
    )
    await index.upsert(project_id, [(existing, derived.vector)])
    return uuid.UUID(str(existing))


async def mark_stale_for_schema(
    pool: asyncpg.Pool,
    index: VectorIndex,
    project_id: str,
    schema: SchemaInfo,
    schema_version_id: int | None,
    embedder: Embedder | None = None,
) -> int:
    """Re-check every example against a new schema version; returns how many became stale now.

    Examples referencing a dropped table or column become stale and leave the index; stale ones whose names
    exist again are un-staled and re-indexed (re-embedded with ``embedder`` when the index dropped their
    vector, otherwise from the stored embedding).
    """
    rows = await pool.fetch(
        "SELECT id, question, sql, tables, columns, stale, verified, rated_down, embedding::text AS embedding"
        " FROM examples WHERE project_id = $1",
        project_id,
    )
    now_stale: list[uuid.UUID] = []
    revived: list[asyncpg.Record] = []
    still_valid: list[uuid.UUID] = []
    for row in rows:
        valid = is_valid_for(row["tables"], row["columns"], schema)
        if not valid and not row["stale"]:
            now_stale.append(row["id"])
        elif valid and row["stale"]:
            revived.append(row)
        elif valid:
            still_valid.append(row["id"])
    async with pool.acquire() as conn, conn.transaction():
        if now_stale:
            await conn.execute(
                "UPDATE examples SET stale = true, updated_at = now()"
                " WHERE project_id = $1 AND id = ANY($2::uuid[])",
                project_id,
                now_stale,
            )
        if revived or still_valid:
            await conn.execute(
                "UPDATE examples SET stale = false, schema_version_id = $3, updated_at = now()"
                " WHERE project_id = $1 AND id = ANY($2::uuid[])",
                project_id,
                [r["id"] for r in revived] + still_valid,
                schema_version_id,
            )
    if now_stale:
        await index.delete(project_id, now_stale)
    usable = [r for r in revived if r["verified"] and not r["rated_down"]]
    if usable:
        await _reindex(pool, index, embedder, project_id, usable, schema)
    if now_stale or revived:
        log.info(
            "examples re-checked against schema",
            extra={"project_id": project_id, "stale": len(now_stale), "revived": len(revived)},
        )
    return len(now_stale)


async def _reindex(
    pool: asyncpg.Pool,
    index: VectorIndex,
    embedder: Embedder | None,
    project_id: str,
    rows: Sequence[Any],
    schema: SchemaInfo,
) -> None:
    items: list[tuple[uuid.UUID, np.ndarray]] = [
        (r["id"], parse_vector(r["embedding"])) for r in rows if r["embedding"] is not None
    ]
    missing = [r for r in rows if r["embedding"] is None]
    if missing:
        if embedder is None:
            log.warning(
                "revived examples lack an embedding and no embedder was given; reembed_all will index them",
                extra={"project_id": project_id, "count": len(missing)},
            )
        else:
            masked = [
                mask_question(r["question"], schema, sql_values(r["sql"], schema.dialect)) for r in missing
            ]
            texts = [retrieval_text(r["question"], m) for r, m in zip(missing, masked, strict=True)]
            vectors = await asyncio.to_thread(embedder.embed, texts)
            await pool.executemany(
                "UPDATE examples SET masked_question = $2, embedding = $3::vector, embedding_model = $4"
                " WHERE id = $1",
                [
                    (r["id"], m, vector_literal(v), embedder.name)
                    for r, m, v in zip(missing, masked, vectors, strict=True)
                ],
            )
            items.extend((r["id"], v) for r, v in zip(missing, vectors, strict=True))
    await index.upsert(project_id, items)


async def reembed_all(
    pool: asyncpg.Pool, index: VectorIndex, embedder: Embedder, project_id: str | None = None
) -> int:
    """Re-embed examples embedded by another model (or never embedded); returns how many were re-embedded.

    Runs after the configured embedding model changes: vectors of different models are not comparable, so
    mixing them would make similarity meaningless. The question and its stored masked form get embedded.
    """
    rows = await pool.fetch(
        f"""
        SELECT id, project_id, question, masked_question, ({_USABLE}) AS usable FROM examples
        WHERE ($1::text IS NULL OR project_id = $1)
          AND (embedding_model IS DISTINCT FROM $2 OR (embedding IS NULL AND {_USABLE}))
        ORDER BY project_id, id
        """,
        project_id,
        embedder.name,
    )
    for start in range(0, len(rows), _REEMBED_BATCH):
        batch = rows[start : start + _REEMBED_BATCH]
        texts = [retrieval_text(r["question"], r["masked_question"] or r["question"]) for r in batch]
        vectors = await asyncio.to_thread(embedder.embed, texts)
        await pool.executemany(
            "UPDATE examples SET embedding = $2::vector, embedding_model = $3, updated_at = now()"
            " WHERE id = $1",
            [(r["id"], vector_literal(v), embedder.name) for r, v in zip(batch, vectors, strict=True)],
        )
        by_project: dict[str, list[tuple[uuid.UUID, np.ndarray]]] = {}
        for row, vector in zip(batch, vectors, strict=True):
            if row["usable"]:
                by_project.setdefault(row["project_id"], []).append((row["id"], vector))
        for pid, items in by_project.items():
            await index.upsert(pid, items)
    if rows:
        log.info("examples re-embedded", extra={"count": len(rows), "model": embedder.name})
    return len(rows)


# --- reads -------------------------------------------------------------------------------------------------


async def count_verified_since(pool: asyncpg.Pool, project_id: str, since_version: int | None = None) -> int:
    """Usable examples no model version up to ``since_version`` was trained on (None: never trained on)."""
    count: int = await pool.fetchval(
        f"SELECT count(*) FROM examples WHERE project_id = $1 AND {_USABLE}"
        " AND (trained_in_version IS NULL OR ($2::int IS NOT NULL AND trained_in_version > $2))",
        project_id,
        since_version,
    )
    return count


async def count_usable(pool: asyncpg.Pool, project_id: str) -> int:
    count: int = await pool.fetchval(
        f"SELECT count(*) FROM examples WHERE project_id = $1 AND {_USABLE}", project_id
    )
    return count


@dataclass
class StoredExample:
    id: uuid.UUID
    question: str
    sql: str
    sql_skeleton: str
    quality: float


async def load_usable(
    pool: asyncpg.Pool, project_id: str, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, StoredExample]:
    """The given examples that belong to ``project_id`` and are usable, by id (others are silently absent)."""
    if not ids:
        return {}
    rows = await pool.fetch(
        f"SELECT id, question, sql, sql_skeleton, quality FROM examples"
        f" WHERE project_id = $1 AND id = ANY($2::uuid[]) AND {_USABLE}",
        project_id,
        list(ids),
    )
    return {
        r["id"]: StoredExample(r["id"], r["question"], r["sql"], r["sql_skeleton"] or "", float(r["quality"]))
        for r in rows
    }


async def example_for_answer(
    pool: asyncpg.Pool, project_id: str, answer_id: uuid.UUID
) -> tuple[bool, bool] | None:
    """(verified, rated down) of the example learned from an answer; None when none was."""
    row = await pool.fetchrow(
        "SELECT verified, rated_down FROM examples WHERE project_id = $1 AND answer_id = $2",
        project_id,
        answer_id,
    )
    return (bool(row["verified"]), bool(row["rated_down"])) if row else None


async def usable_pairs(pool: asyncpg.Pool, project_id: str) -> list[tuple[uuid.UUID, str, str]]:
    """(id, question, SQL) of the project's usable examples (verified, not stale, not rated down), oldest first."""
    rows = await pool.fetch(
        f"SELECT id, question, sql FROM examples WHERE project_id = $1 AND {_USABLE} ORDER BY created_at, id",
        project_id,
    )
    return [(r["id"], r["question"], r["sql"]) for r in rows]


async def mark_trained(
    pool: asyncpg.Pool, project_id: str, example_ids: list[uuid.UUID], version: int
) -> None:
    await pool.execute(
        "UPDATE examples SET trained_in_version = $3, updated_at = now() WHERE project_id = $1 AND id = ANY($2)",
        project_id,
        example_ids,
        version,
    )


# Joins the training jobs (model registry's table) only to find when the last training was asked for.
_USABLE_SINCE_TRAINING = f"""
SELECT count(*) FILTER (WHERE e.created_at > coalesce(last.requested_at, '-infinity')) AS new,
       count(*) AS total
FROM examples e
LEFT JOIN LATERAL (
    SELECT max(requested_at) AS requested_at FROM training_jobs
    WHERE project_id = $1 AND status <> 'failed' AND status <> 'cancelled'
) last ON true
WHERE e.project_id = $1 AND {_USABLE}
"""


async def usable_since_last_training(pool: asyncpg.Pool, project_id: str) -> tuple[int, int]:
    """(usable examples added since the last training request that did not fail, all usable examples)."""
    row = await pool.fetchrow(_USABLE_SINCE_TRAINING, project_id)
    return (int(row["new"]), int(row["total"])) if row else (0, 0)
