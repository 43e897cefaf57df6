"""Word forms shared by the prompt's table relevance, its column hints and the templates' wording checks."""

from __future__ import annotations

from collections.abc import Iterable


def singular(word: str) -> str:
    """A lower-cased word without its plural ending, crudely ("densities" → "density", "lengths" → "length");
    "ss" endings ("address") are kept."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def has_number(words: Iterable[str]) -> bool:
    """Whether any of ``words`` holds a digit: a number in a question is a value ("in 2023"), never a wording."""
    return any(ch.isdigit() for word in words for ch in word)


__all__ = ["has_number", "singular"]
