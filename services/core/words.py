"""Word forms shared by the prompt's table relevance and its column hints."""

from __future__ import annotations


def singular(word: str) -> str:
    """A lower-cased word without its plural ending, crudely ("densities" → "density", "lengths" → "length");
    "ss" endings ("address") are kept."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


__all__ = ["singular"]
