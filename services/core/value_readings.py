"""Which of two equally close verified examples to follow when a question's value reads as two things.

"what is the population of washington" is word for word "what is the population of seattle" (a city's
population) and "what is the population of maine" (a state's): both adapt, both run, and retrieval order
decides, often for the city, since Seattle lies in Washington. Nothing in the words settles it; the database
does: 'washington' the state is referred to from many tables (cities, borders, rivers, lakes), the city from
one. So among adaptations that agree with the question equally well, the one that puts the question's values
in the more prominent columns (``ValueIndex.prominence``) is tried first; anything else keeps its order.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlglot
from sqlglot.errors import SqlglotError

from services.core.schema import SchemaInfo
from services.core.sql.dialects import glot_dialect
from services.core.template_match import Adaptation
from services.core.values import ValueIndex, column_literals


def prominence(adapted: Adaptation, schema: SchemaInfo, index: ValueIndex) -> int:
    """How prominent the columns are that ``adapted`` compares the question's values with (0 where its SQL
    does not parse or compares them with no indexed column)."""
    new_values = {new.lower() for _, new in adapted.substitutions}
    try:
        tree = sqlglot.parse_one(adapted.sql, read=glot_dialect(schema.dialect))
    except SqlglotError:
        return 0
    total = 0
    for literal, columns in column_literals(tree, schema):
        if literal.this.lower() in new_values:
            total += max((index.prominence(literal.this, f"{t}.{c}") for t, c in columns), default=0)
    return total


def by_prominence(adapted: Sequence[Adaptation], schema: SchemaInfo, index: ValueIndex) -> list[Adaptation]:
    """``adapted`` (closest first, as ``template_match.adaptations`` orders them) with each run of equally
    close adaptations put in order of prominence, the most prominent first; the order is stable otherwise."""
    ranked = sorted(
        enumerate(adapted),
        key=lambda item: (
            -item[1].shared_words,
            len(item[1].substitutions),
            -prominence(item[1], schema, index),
            item[0],
        ),
    )
    return [a for _, a in ranked]


__all__ = ["by_prominence", "prominence"]
