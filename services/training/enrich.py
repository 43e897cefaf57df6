"""A split dataset made ready for training as the product serves: value variants added to the training side
(run through the guarded path, kept when they return rows) and each prompt given the similar examples and the
value hints that serving would put in it.

Similar examples come from the training side's verified examples only, never the example itself: a held-out
example is never seen by the adapter, not even as another question's context. Similarity is the wording of
the questions once the values they name are masked (rapidfuzz), which is what serving's value-masked
retrieval ranks by as well; the training worker then needs no embedding model.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rapidfuzz import fuzz, process

from events.internal import ContextExample
from services.core.examples.masking import sql_skeleton
from services.core.schema import SchemaInfo
from services.core.values import ValueIndex, normalize
from services.training.augment import spread, value_variants
from services.training.dataset import ProjectDataset, TrainingExample
from services.training.evaluate import Executor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnrichOptions:
    variants_per_example: int = 3
    max_variants: int = 400
    context_examples: int = 3
    #: Share of training prompts whose context leaves out every example of the answer's SQL shape, as serving
    #: sees a question of a pattern the project never had: there the adapter must write the shape itself.
    unseen_pattern_share: float = 0.0
    #: Value hints as serving words them (``ValueIndex.hints``' ``entity_words``, QUERYLIFT_ENTITY_VALUE_HINTS).
    entity_value_hints: bool = False
    seed: int = 13
    timeout_s: float = 10.0
    row_limit: int = 1000


def _masked(question: str, index: ValueIndex | None) -> str:
    text = normalize(question)
    if index is None:
        return text
    for match in index.matches(question):
        text = text.replace(match.phrase, "<value>")
    return text


def with_context(
    examples: Sequence[TrainingExample],
    pool: Sequence[TrainingExample],
    index: ValueIndex | None,
    k: int,
    *,
    unseen_pattern_share: float = 0.0,
    dialect: str = "sqlite",
    seed: int = 13,
    entity_words: bool = False,
) -> list[TrainingExample]:
    """Each example with its ``k`` most similar examples of ``pool`` (itself and same-question examples left
    out) and the value hints of its question; for ``unseen_pattern_share`` of them (drawn with ``seed``), only
    examples of another SQL shape than the answer's."""

    def hints(question: str) -> tuple[str, ...]:
        return tuple(index.hints(question, entity_words=entity_words)) if index is not None else ()

    if not pool:
        return [replace(e, value_hints=hints(e.question)) for e in examples]
    keys = [_masked(p.question, index) for p in pool]
    rng = random.Random(seed)
    shapes = [sql_skeleton(p.sql, dialect) for p in pool] if unseen_pattern_share > 0 else []
    out = []
    for example in examples:
        context: tuple[ContextExample, ...] = ()
        unseen = unseen_pattern_share > 0 and rng.random() < unseen_pattern_share
        if k > 0:
            own = sql_skeleton(example.sql, dialect) if unseen else None
            found = process.extract(
                _masked(example.question, index),
                keys,
                scorer=fuzz.token_set_ratio,
                limit=None if unseen else k + 2,
            )
            chosen = [
                (pool[i], score)
                for _, score, i in found
                if pool[i].id != example.id
                and pool[i].question.lower() != example.question.lower()
                and (own is None or shapes[i] != own)
            ][:k]
            context = tuple(
                ContextExample(
                    example_id=str(p.id), source="project", question=p.question, sql=p.sql, score=score / 100
                )
                for p, score in chosen
            )
        out.append(replace(example, context=context, value_hints=hints(example.question)))
    return out


async def kept_variants(
    train: Sequence[TrainingExample],
    schema: SchemaInfo,
    index: ValueIndex,
    databases: Executor,
    database_url: str,
    options: EnrichOptions,
    held_out: Sequence[TrainingExample] = (),
) -> tuple[list[TrainingExample], int]:
    """Value variants of the training examples that run and return rows (none that asks a question already
    in the dataset, held-out ones included); also how many were tried."""
    rng = random.Random(options.seed)
    known = {e.question.lower() for e in (*train, *held_out)}
    made = []
    for example in sorted(train, key=lambda e: str(e.id)):
        made += value_variants(
            example.question,
            example.sql,
            schema,
            index,
            per_example=options.variants_per_example,
            rng=rng,
        )
    candidates = [v for v in spread(made, options.max_variants) if v.question.lower() not in known]
    kept: list[TrainingExample] = []
    for variant in candidates:
        try:
            _, result = await databases.check_and_run(
                database_url, variant.sql, schema, timeout_s=options.timeout_s, row_limit=options.row_limit
            )
        except Exception as exc:  # refused or failed: the variant is not kept, whatever the reason
            log.debug("value variant dropped", extra={"error": type(exc).__name__})
            continue
        if result.rows:
            kept.append(
                TrainingExample(
                    id=uuid.uuid5(uuid.NAMESPACE_URL, f"variant/{variant.question}/{variant.sql}"),
                    question=variant.question,
                    sql=variant.sql,
                    origin="value_variant",
                )
            )
    return kept, len(candidates)


async def enrich(
    dataset: ProjectDataset,
    *,
    index: ValueIndex | None,
    databases: Executor | None,
    database_url: str | None,
    options: EnrichOptions,
) -> ProjectDataset:
    """The dataset with value variants on its training side and serving-like prompts on both sides."""
    verified = dataset.verified_train
    variants: list[TrainingExample] = []
    tried = 0
    if index is not None and databases is not None and database_url and options.variants_per_example > 0:
        variants, tried = await kept_variants(
            verified, dataset.schema, index, databases, database_url, options, held_out=dataset.validation
        )
    train = with_context(
        [*verified, *variants],
        verified,
        index,
        options.context_examples,
        unseen_pattern_share=options.unseen_pattern_share,
        dialect=dataset.schema.dialect,
        seed=options.seed,
        entity_words=options.entity_value_hints,
    )
    # The gate's examples are asked as serving asks them: with the most similar examples, whatever their shape.
    validation = with_context(
        dataset.validation, verified, index, options.context_examples, entity_words=options.entity_value_hints
    )
    own_shape = sum(
        any(
            sql_skeleton(c.sql, dataset.schema.dialect) == sql_skeleton(e.sql, dataset.schema.dialect)
            for c in e.context
        )
        for e in train
    )
    composition = {
        "variants_tried": tried,
        "context_with_the_answers_shape": own_shape,
        "with_context": sum(bool(e.context) for e in train),
        "with_value_hints": sum(bool(e.value_hints) for e in train),
    }
    return replace(dataset, train=train, validation=validation, composition=composition)


__all__ = ["EnrichOptions", "enrich", "kept_variants", "with_context"]
