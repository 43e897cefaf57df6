"""The serving prompt's options as the settings choose them: one mapping for the generation consumer that
prompts with them and the training consumer that may train on prompts made the same way."""

from __future__ import annotations

from services.core.prompt import PromptOptions
from services.infra.settings import Settings


def prompt_options(settings: Settings) -> PromptOptions:
    return PromptOptions.full().but(
        value_hints=settings.value_hints,
        column_hints=settings.column_hints,
        plain_example_sql=settings.plain_example_sql,
        example_aliases=None if settings.example_aliases == "as_written" else settings.example_aliases,
        entity_value_hints=settings.entity_value_hints,
        column_hints_named_table=settings.column_hints_named_table,
        max_examples=settings.prompt_examples,
    )
