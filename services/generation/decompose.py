"""A question of a new shape answered in two steps: the model writes the query for its inner phrase alone, and
a verified example's query is built around it.

"How many states border the state that borders the most states": the project has verified "how many states
border tennessee" but nothing that asks for "the state that borders the most states". A small model asked the
whole question tends to tangle the nesting; asked only for the phrase, it has the simpler question of the two,
and the outer query comes from an example with the phrase's query in place of its value
(``services.core.composition.open_compositions``). The phrase's query must run and return the kind of thing
the outer query compares, and the whole must hold something; otherwise the caller asks the model for the
whole question as usual.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from events import ContextExample
from services.core.composition import OpenComposition, open_compositions
from services.core.prompt import Prompt
from services.core.schema import SchemaInfo
from services.core.sql import extract_sql
from services.core.values import ValueIndex
from services.generation.candidates import Candidate, one_answer, says_nothing


@dataclass(frozen=True)
class Decomposed:
    """The composed answer and what it was made of."""

    candidate: Candidate
    inner_sql: str
    outer_id: str
    phrase: str


async def answer_by_parts(
    question: str,
    examples: Sequence[ContextExample],
    schema: SchemaInfo,
    values: ValueIndex,
    *,
    prompt_for: Callable[[str], Prompt],
    complete: Callable[[Prompt], Awaitable[str]],
    run: Callable[[str], Awaitable[Candidate]],
) -> Decomposed | None:
    """The composed answer for ``question``, or None (no outer example fits, or the phrase's query does not
    serve). ``prompt_for`` builds the prompt of a question, ``complete`` asks the model, ``run`` checks and
    runs a query."""
    project = [e for e in examples if e.source == "project"]
    opened = open_compositions(question, project, schema, values)
    if not opened:
        return None
    place: OpenComposition = opened[0]
    inner = await run(extract_sql(await complete(prompt_for(place.cut.phrase))))
    if inner.outcome != "ran" or inner.result is None or says_nothing(inner.result):
        return None
    composed_sql = place.close(inner.sql, schema, values)
    if composed_sql is None:
        return None
    composed = await run(composed_sql)
    if composed.outcome != "ran" or composed.result is None or says_nothing(composed.result):
        return None
    if place.single and not one_answer(composed.result):
        return None  # a superlative asks for one thing
    return Decomposed(
        candidate=composed, inner_sql=inner.sql, outer_id=place.outer_id, phrase=place.cut.phrase
    )


__all__ = ["Decomposed", "answer_by_parts"]
