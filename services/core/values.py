"""Value grounding: which columns hold the values a question mentions, and which literals of a query hold none.

Small models fail most on literal values and on which column holds them ("new york city" for
``city_name = 'new york'``, a state name used as a city). At registration the distinct short text values of every
text column are collected (bounded per column and per project; ``CustomerDatabases.column_values``) and stored
per project (``column_values_store``). Here they are matched against a question's words and phrases, exactly
and fuzzily (rapidfuzz), giving prompt lines such as "'new york' is a value of city.city_name and
state.state_name"; and a query's string literals are checked against the columns they are compared with, so a
literal that occurs in none of them is named with the closest values, as a repair hint, and one that differs
from a value only in case or spacing can be corrected without asking the model again.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from rapidfuzz import fuzz, process
from sqlglot import exp

from services.core.schema import SchemaInfo
from services.core.words import singular

#: Values longer than this are not indexed (descriptions and notes are not what questions filter on).
MAX_VALUE_CHARS = 64
#: Distinct values kept per column (the most frequent first) and per project.
MAX_VALUES_PER_COLUMN = 500
MAX_VALUES_PER_PROJECT = 20_000
#: Fuzzy matches below this rapidfuzz ratio are ignored.
FUZZY_CUTOFF = 85
MAX_HINTS = 6
_MAX_NGRAM = 4

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)
STOPWORDS = frozenset(
    """a an the of in on at to for by with from and or not no is are was were be been do does did what which who
    whom whose how many much show list give me all each every per that this these those there their it its as
    than then into over under about between get find tell return please i we you our my your have has had can
    could would should will any some one most least more less largest smallest biggest highest lowest longest
    shortest number count total average name names give""".split()
)


def normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class ColumnValues:
    table: str
    column: str
    values: tuple[str, ...]
    #: Every distinct value of the column is here (it had no more than the per-column bound).
    complete: bool


@dataclass(frozen=True)
class ValueMatch:
    phrase: str  # the question's words that matched
    value: str  # as stored in the database
    columns: tuple[str, ...]  # "table.column" holding it
    score: float


@dataclass
class ValueIndex:
    """The indexed values of one project's database."""

    columns: list[ColumnValues]
    _by_norm: dict[str, list[tuple[str, str]]] = field(init=False, repr=False)
    _norms: list[str] = field(init=False, repr=False)
    _by_column: dict[tuple[str, str], ColumnValues] = field(init=False, repr=False)
    _norm_sets: dict[str, frozenset[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_norm: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for column in self.columns:
            if len(column.values) < 2:
                continue  # a constant column ('usa' in every row) tells a question nothing
            for value in column.values:
                norm = normalize(value)
                if norm and not norm.isdigit():
                    by_norm[norm].append((value, f"{column.table}.{column.column}"))
        self._by_norm = dict(by_norm)
        self._norms = list(self._by_norm)
        self._by_column = {(c.table.lower(), c.column.lower()): c for c in self.columns}
        self._norm_sets = {
            f"{c.table}.{c.column}".lower(): frozenset(filter(None, map(normalize, c.values)))
            for c in self.columns
        }

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, str, bool]]) -> ValueIndex:
        grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
        complete: dict[tuple[str, str], bool] = {}
        for table, column, value, is_complete in rows:
            grouped[(table, column)].append(value)
            complete[(table, column)] = is_complete
        return cls([ColumnValues(t, c, tuple(v), complete[(t, c)]) for (t, c), v in grouped.items()])

    def __len__(self) -> int:
        return sum(len(c.values) for c in self.columns)

    # --- questions --------------------------------------------------------------------------------------

    def matches(self, question: str) -> list[ValueMatch]:
        """Values the question mentions, longest phrases first, no two overlapping."""
        words = normalize(question).split()
        found: list[tuple[int, int, ValueMatch]] = []
        for size in range(min(_MAX_NGRAM, len(words)), 0, -1):
            for start in range(len(words) - size + 1):
                gram = words[start : start + size]
                # A phrase starts and ends with a content word ("of springfield" is "springfield").
                if gram[0] in STOPWORDS or gram[-1] in STOPWORDS or (size == 1 and len(gram[0]) < 3):
                    continue
                match = self._match(" ".join(gram))
                if match is not None:
                    found.append((start, start + size, match))
        chosen: list[tuple[int, int, ValueMatch]] = []
        # Exact matches first, then the longest phrase, then the best score.
        ranked = sorted(found, key=lambda f: (f[2].score < 100, -(f[1] - f[0]), -f[2].score, f[0]))
        for start, end, match in ranked:
            if all(end <= s or start >= e for s, e, _ in chosen):
                chosen.append((start, end, match))
        return [m for _, _, m in sorted(chosen, key=lambda c: c[0])]

    def _match(self, phrase: str) -> ValueMatch | None:
        exact = self._by_norm.get(phrase)
        if exact is not None:
            return _combine(phrase, exact, 100.0)
        # Fuzzy only for phrases specific enough that a near miss is a misspelling, not another word
        # ("long" is not "longs"): several words, or one long word.
        if (" " not in phrase and len(phrase) < 6) or len(phrase) < 6 or not self._norms:
            return None
        best = process.extractOne(phrase, self._norms, scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF)
        if best is None:
            return None
        norm, score, _ = best
        return _combine(phrase, self._by_norm[norm], float(score))

    def hints(self, question: str, *, entity_words: bool = False) -> list[str]:
        """Short prompt hints, only where they tell the model something: a phrase stored under another
        spelling ("'new york city' is stored as 'new york' in city.city_name"), or a value held by one or two
        columns (preferring those of tables the question names). A value found in many columns (a state name
        in every table) is left out: listing them all only invites joins.

        With ``entity_words``, a value next to a word that names a table ("the colorado river", "washington
        state") is that table's thing: the hint names the table's name column alone (``_entity_columns``)."""
        sequence = normalize(question).split()
        words = set(sequence)
        out = []
        for found in self.matches(question):
            match = (self._entity_reading(found) or found) if entity_words else found
            entity = _entity_columns(match, sequence) if entity_words else []
            named = entity or [c for c in match.columns if _table_words(c.split(".", 1)[0]) & words]
            columns = named if 0 < len(named) <= 2 else list(match.columns)
            if normalize(match.phrase) != normalize(match.value):
                out.append(f"'{match.phrase}' is stored as '{match.value}' in {', '.join(columns[:3])}")
            elif len(columns) <= 2:
                out.append(f"'{match.value}' is in {', '.join(columns)}")
            if len(out) >= MAX_HINTS:
                break
        return out

    def entity_phrases(self, question: str) -> list[ValueMatch]:
        """``matches``, where a word right after or before a value names a table whose name column holds it, read
        as that table's thing with the word in the phrase: "new york city" is the city 'new york' (not the state
        and the word "city"), "the mississippi river" the river. A value no such word follows stays as matched."""
        sequence = normalize(question).split()
        out = []
        for found in self.matches(question):
            match = self._entity_reading(found) or found
            out.append(_with_table_word(match, sequence) or found)
        return out

    def without_appositions(self, question: str) -> str:
        """``question`` (normalized) without a word naming a table right after a word naming a column whose
        values are that table's things: "the capital city of texas" asks for the capital, a city already
        (state.capital holds city names), so it reads "the capital of texas"."""
        words = normalize(question).split()
        kept = [w for i, w in enumerate(words) if not (i and self._apposition(words[i - 1], w))]
        return " ".join(kept)

    def _apposition(self, column_word: str, noun: str) -> bool:
        named = [c for c in self.columns if normalize(c.column.replace("_", " ")) == singular(column_word)]
        things = [c for c in self.columns if _is_thing_name(noun, f"{c.table}.{c.column}")]
        return any(
            a.table.lower() != b.table.lower()
            and self._same_kind(f"{a.table}.{a.column}", f"{b.table}.{b.column}")
            for a in named
            for b in things
        )

    def _same_kind(self, one: str, other: str) -> bool:
        """Whether two columns ("table.column") hold the same kind of thing: they share at least half of the
        smaller one's values."""
        a, b = self._norm_sets.get(one.lower(), frozenset()), self._norm_sets.get(other.lower(), frozenset())
        return bool(a and b) and 2 * len(a & b) >= min(len(a), len(b))

    def prominence(self, value: str, column: str) -> int:
        """How many columns hold ``value`` as the same kind of thing that ``column`` ("table.column") holds it
        as: columns sharing at least half of the smaller one's values with it (the states of city.state_name and
        of state.state_name), ``column`` itself included; 0 where ``column`` does not hold it. A name that reads
        as two things ('washington' the state and the city) is most likely the one the database refers to
        from more places, the one other tables are about."""
        norm = normalize(value)
        home = self._norm_sets.get(column.lower())
        if not norm or home is None or norm not in home:
            return 0
        return sum(
            1
            for other, values in self._norm_sets.items()
            if norm in values and self._same_kind(column, other)
        )

    def _entity_reading(self, match: ValueMatch) -> ValueMatch | None:
        """``match`` read as a table's thing named by the phrase's first or last word: "colorado river" is
        stored as a lowest point, but the words say "the river colorado", and 'colorado' is a river's name; so
        is "mount mckinley" the mountain 'mckinley'. None where the rest of the phrase is no such name."""
        words = normalize(match.phrase).split()
        if len(words) < 2:
            return None
        for noun, rest in ((words[-1], words[:-1]), (words[0], words[1:])):
            if any(_is_thing_name(noun, c) for c in match.columns):
                return None  # the whole phrase is that table's thing already ("kansas city" is a city)
            holders = self._by_norm.get(" ".join(rest), [])
            named = [(value, column) for value, column in holders if _is_thing_name(noun, column)]
            if len({column for _, column in named}) == 1:
                return ValueMatch(
                    phrase=" ".join(rest), value=named[0][0], columns=(named[0][1],), score=100.0
                )
        return None

    # --- literals of a query ----------------------------------------------------------------------------

    def column(self, table: str, column: str) -> ColumnValues | None:
        return self._by_column.get((table.lower(), column.lower()))

    def closest(self, column: ColumnValues, literal: str, limit: int = 3) -> list[str]:
        found = process.extract(literal, list(column.values), scorer=fuzz.WRatio, limit=limit)
        return [value for value, _, _ in found]


def _table_words(table: str) -> set[str]:
    words = set(normalize(table.replace("_", " ")).split())
    return words | {w + "s" for w in words} | {w[:-1] for w in words if w.endswith("s")}


def _around(sequence: Sequence[str], phrase: str) -> tuple[list[str], list[str]]:
    """The word right before and the word right after (each a list of at most one) the first place ``phrase``
    occurs in ``sequence``; two empty lists where it does not occur."""
    part = phrase.split()
    for start in range(len(sequence) - len(part) + 1):
        if list(sequence[start : start + len(part)]) == part:
            end = start + len(part)
            return list(sequence[max(0, start - 1) : start]), list(sequence[end : end + 1])
    return [], []


def _neighbours(sequence: Sequence[str], phrase: str) -> set[str]:
    """The words right before and right after the first place ``phrase`` occurs in ``sequence``."""
    before, after = _around(sequence, phrase)
    return {*before, *after}


def _names_table(word: str, table: str) -> bool:
    """Whether ``word`` names ``table``'s things: the table's one-word name, plural or not, or a clipped form of
    it ("mount" for mountain). A word of a longer name is no such noun ("border" of border_info is the verb in
    "which states border iowa")."""
    words = normalize(table.replace("_", " ")).split()
    if len(words) != 1:
        return False
    name = singular(words[0])
    return singular(word) == name or (len(word) >= 5 and name.startswith(word))


def _is_name_column(column: str) -> bool:
    """A column that names its table's things: the table's own word in its name, or a column called just
    "name" (river.river_name; not river.traverse, which holds the states a river crosses, nor city.state_name,
    which names another table's things)."""
    table, _, name = column.partition(".")
    words = normalize(name.replace("_", " ")).split()
    return words == ["name"] or bool(set(words) & _table_words(table))


def _is_thing_name(word: str, column: str) -> bool:
    """Whether ``column`` ("table.column") is the name column of a table ``word`` names."""
    return _names_table(word, column.split(".", 1)[0]) and _is_name_column(column)


def _with_table_word(match: ValueMatch, sequence: Sequence[str]) -> ValueMatch | None:
    """``match`` with the word after (else before) it in ``sequence`` taken into its phrase, where that word
    names a table and exactly one of the match's columns is that table's name column; None where neither does."""
    phrase = normalize(match.phrase)
    before, after = _around(sequence, phrase)
    for noun, extended in [(w, f"{phrase} {w}") for w in after] + [(w, f"{w} {phrase}") for w in before]:
        named = [column for column in match.columns if _is_thing_name(noun, column)]
        if len(named) == 1:
            return ValueMatch(extended, match.value, (named[0],), match.score)
    return None


def _entity_columns(match: ValueMatch, sequence: Sequence[str]) -> list[str]:
    """The one column holding ``match`` that names the things of a table a neighbouring word names ("the
    missouri river" -> river.river_name). Empty where no neighbour names a holding table or the choice stays
    open."""
    near = _neighbours(sequence, normalize(match.phrase))
    found = [column for column in match.columns if any(_is_thing_name(word, column) for word in near)]
    return found if len(found) == 1 else []


def _combine(phrase: str, holders: Sequence[tuple[str, str]], score: float) -> ValueMatch:
    value = holders[0][0]
    columns = tuple(dict.fromkeys(col for v, col in holders if normalize(v) == normalize(value)))
    return ValueMatch(phrase=phrase, value=value, columns=columns, score=score)


# --- literals compared with columns ---------------------------------------------------------------------


@dataclass(frozen=True)
class LiteralProblem:
    literal: str
    columns: tuple[str, ...]  # "table.column" the literal is compared with
    closest: tuple[str, ...]
    #: The one value the literal means (a mechanical fix), if any: ``fix_kind`` "case" when it differs only
    #: in case or spacing, "words" when it is the one value of the column among the literal's words ('mount
    #: mckinley' for 'mckinley': the question's phrase with a word the database does not store).
    fix: str | None
    fix_kind: Literal["case", "words"] | None = None

    def message(self) -> str:
        where = " or ".join(self.columns)
        near = ", ".join(f"'{v}'" for v in self.closest)
        return f"'{self.literal}' is not a value of {where}" + (
            f"; the closest values are {near}" if near else ""
        )


def _aliases(tree: exp.Expr) -> dict[str, str]:
    return {t.alias_or_name.lower(): t.name for t in tree.find_all(exp.Table) if t.name}


def _columns_for(column: exp.Column, tree: exp.Expr, schema: SchemaInfo) -> list[tuple[str, str]]:
    aliases = _aliases(tree)
    name = column.name
    if column.table:
        named = aliases.get(column.table.lower())
        candidates = [named] if named else []
    else:
        candidates = list(dict.fromkeys(aliases.values()))
    out = []
    for table_name in candidates:
        table = schema.table(table_name)
        if table is not None and table.column(name) is not None:
            out.append((table.name, name))
    return out


def _comparisons(tree: exp.Expr) -> Iterable[tuple[exp.Column, exp.Literal]]:
    for node in tree.walk():
        if isinstance(node, (exp.EQ, exp.NEQ, exp.Like, exp.ILike)):
            left, right = node.this, node.expression
            if isinstance(right, exp.Column) and isinstance(left, exp.Literal):
                left, right = right, left
            if isinstance(left, exp.Column) and isinstance(right, exp.Literal) and right.is_string:
                if isinstance(node, (exp.Like, exp.ILike)) and any(ch in right.this for ch in "%_"):
                    continue  # a pattern, not a value
                yield left, right
        elif isinstance(node, exp.In) and isinstance(node.this, exp.Column):
            for item in node.expressions:
                if isinstance(item, exp.Literal) and item.is_string:
                    yield node.this, item


def column_literals(tree: exp.Expr, schema: SchemaInfo) -> list[tuple[exp.Literal, list[tuple[str, str]]]]:
    """String literals compared with columns, each with the (table, column) pairs it is compared with."""
    return [(literal, _columns_for(column, tree, schema)) for column, literal in _comparisons(tree)]


def literal_problems(tree: exp.Expr, schema: SchemaInfo, index: ValueIndex) -> list[LiteralProblem]:
    """String literals compared with text columns whose every value is indexed, and found in none of them."""
    problems = []
    for column, literal in _comparisons(tree):
        holders = [index.column(t, c) for t, c in _columns_for(column, tree, schema)]
        known = [h for h in holders if h is not None]
        if not known or not all(h.complete for h in known) or len(known) != len(holders):
            continue  # a column we cannot vouch for: say nothing
        value = literal.this
        if len(value) > MAX_VALUE_CHARS or any(value in h.values for h in known):
            continue  # long literals are never indexed
        wanted = normalize(value)
        same = {v for h in known for v in h.values if normalize(v) == wanted}
        closest = tuple(dict.fromkeys(v for h in known for v in index.closest(h, value)))[:3]
        fix: str | None = same.pop() if len(same) == 1 else None
        kind: Literal["case", "words"] | None = "case" if fix is not None else None
        # Only where the literal must equal a value: there the query as written matches nothing (the column's
        # every value is known and this is none of them), so the one value inside it can only add rows.
        if fix is None and isinstance(literal.parent, (exp.EQ, exp.In)):
            inside = {v for h in known for v in h.values if _word_run(normalize(v), wanted)}
            if len(inside) == 1:
                fix, kind = inside.pop(), "words"
        problems.append(
            LiteralProblem(
                literal=value,
                columns=tuple(f"{h.table}.{h.column}" for h in known),
                closest=closest,
                fix=fix,
                fix_kind=kind,
            )
        )
    return problems


def _word_run(part: str, whole: str) -> bool:
    """Whether ``part``'s words occur together, in order, among more words of ``whole`` (both normalized);
    parts shorter than four letters ('ms', 'the') are too common to mean one value."""
    inner, outer = part.split(), whole.split()
    if len(part) < 4 or not inner or len(inner) >= len(outer):
        return False
    return any(outer[i : i + len(inner)] == inner for i in range(len(outer) - len(inner) + 1))


def with_fixed_literals(tree: exp.Expr, fixes: Mapping[str, str]) -> exp.Expr:
    """A copy of the query with the given literals replaced (only where compared with a column)."""
    copy = tree.copy()
    for _, literal in _comparisons(copy):
        if literal.this in fixes:
            literal.replace(exp.Literal.string(fixes[literal.this]))
    return copy


__all__ = [
    "ColumnValues",
    "LiteralProblem",
    "ValueIndex",
    "ValueMatch",
    "column_literals",
    "literal_problems",
    "normalize",
    "with_fixed_literals",
]
