"""Each strategy is a real product configuration: the same prompt options, retrieval settings, checks and
adapter routing the services use, switched on one layer at a time.

==========  ===============================================================================================
baseline    schema as CREATE TABLE text, a plain instruction; no examples, no check, no repair
prompt      + reasoning frame, compact schema with sample values and keys, the project description
rag         + the project's verified examples (``services.core.examples.selection.select_examples``)
fewshot     + domain-library demonstrations (``services.core.examples.fewshot``) where project ones leave room
repair      + static check and execution-guided repair rounds
template    + answers from a verified example whose question is this one with other values, when its SQL
            with the question's values returns rows (``services.core.template_match``)
values      + value grounding: the database values the question mentions and their columns in the prompt,
            literals checked against them (an empty result's repair names the closest values), mechanical
            fixes (SQLite double-quoted strings, a literal's case), and very similar verified examples adapted
            through the values the question names for the same columns (``services.core.value_templates``)
vote        + execution-consistency voting: sampled candidates of the same evaluated prompt, the result most
            agree on answers (three candidates, stopping when the first two agree)
lora        + the project's LoRA adapter trained on its verified history (``services.training``)
product     the generation config the services are wired with (``services.wiring``) and the retrieval
            consumer's settings, no adapter: what a project gets before its first LoRA training
full        everything on: ``product`` and the project's adapter when one was trained in this run
==========  ===============================================================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from services.core.prompt import PromptOptions
from services.generation.pipeline import GenerationConfig
from services.infra.settings import Settings
from services.wiring import generation_config


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    prompt: PromptOptions
    project_examples: bool = False
    library_examples: bool = False
    static_check: bool = False
    repair: bool = False
    adapter: bool = False
    template_answers: bool = False
    #: Value grounding: hints in the prompt, literals checked against the values, mechanical fixes.
    values: bool = False
    #: Candidates for execution-consistency voting (1: none).
    vote_candidates: int = 1
    domain_note: bool = True
    #: ``full`` takes its generation config from ``services.wiring`` rather than assembling one.
    product_wiring: bool = False
    #: Settings this strategy changes (a variant, ``--variant``): what a switch of the product adds is measured
    #: against the same strategy without it, on the same questions in the same run.
    overrides: tuple[tuple[str, str], ...] = ()

    def settings_for(self, base: Settings) -> Settings:
        """The run's settings with this strategy's overrides, validated as the environment would be."""
        if not self.overrides:
            return base
        return Settings.model_validate({**base.model_dump(), **dict(self.overrides)})

    @property
    def uses_history(self) -> bool:
        """Whether answers depend on the replayed history (otherwise one pass serves every history size)."""
        return self.project_examples or self.adapter

    def generation_config(self, settings: Settings) -> GenerationConfig:
        if self.product_wiring:
            config: GenerationConfig = generation_config(settings)
            return config
        return GenerationConfig(
            prompt=self.prompt.but(value_hints=self.values),
            mechanical_fixes=self.values,
            value_check=self.values,
            value_templates=self.values,
            vote_candidates=self.vote_candidates,
            static_check=self.static_check,
            repair_rounds=settings.repair_rounds if self.repair else 0,
            execution_repair=self.repair,
            budget_tokens=settings.prompt_token_budget,
            max_tokens=settings.llm_max_tokens,
            timeout_s=settings.sql_timeout_s,
            row_limit=settings.sql_row_limit,
            preview_rows=settings.preview_rows,
            template_answers=self.template_answers,
        )

    def retrieval_k(self, settings: Settings) -> tuple[int, int]:
        """(project examples, library examples) asked of the retrieval consumer."""
        return (
            settings.retrieval_top_k if self.project_examples else 0,
            settings.fewshot_top_k if self.library_examples else 0,
        )

    def describe(self, settings: Settings) -> dict[str, Any]:
        config = self.generation_config(settings)
        top_k, fewshot_k = self.retrieval_k(settings)
        return {
            "description": self.description,
            "prompt": {k: v for k, v in vars(config.prompt).items()},
            "static_check": config.static_check,
            "repair_rounds": config.repair_rounds,
            "execution_repair": config.execution_repair,
            "template_answers": config.template_answers,
            "value_grounding": config.prompt.value_hints,
            "mechanical_fixes": config.mechanical_fixes,
            "value_templates": config.value_templates,
            "vote_candidates": config.vote_candidates,
            "budget_tokens": config.budget_tokens,
            "max_tokens": config.max_tokens,
            "retrieval_top_k": top_k,
            "fewshot_top_k": fewshot_k,
            "adapter": self.adapter,
            "domain_note": self.domain_note,
            "product_wiring": self.product_wiring,
            "overrides": dict(self.overrides),
        }


_FULL = PromptOptions.full()
# The benchmark asks single questions, never follow-ups, so conversation history is off everywhere.
_PROMPT_ONLY = _FULL.but(examples=False, fewshot=False, history=False)

STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy(
            "baseline",
            "schema only, plain prompt, no check or repair",
            PromptOptions.baseline(),
            domain_note=False,
        ),
        Strategy("prompt", "reasoning frame, compact schema with sample values", _PROMPT_ONLY),
        Strategy("rag", "prompt + retrieved project examples", _FULL.but(fewshot=False, history=False), True),
        Strategy("fewshot", "rag + domain few-shot library", _FULL.but(history=False), True, True),
        Strategy(
            "repair",
            "fewshot + static check and execution-guided repair",
            _FULL.but(history=False),
            True,
            True,
            static_check=True,
            repair=True,
        ),
        Strategy(
            "template",
            "repair + answers from verified examples asked with other values",
            _FULL.but(history=False),
            True,
            True,
            static_check=True,
            repair=True,
            template_answers=True,
        ),
        Strategy(
            "values",
            "template + value grounding: the values a question mentions, literals checked against them, "
            "mechanical fixes",
            _FULL.but(history=False),
            True,
            True,
            static_check=True,
            repair=True,
            template_answers=True,
            values=True,
        ),
        Strategy(
            "vote",
            "values + execution-consistency voting over sampled candidates of the same prompt",
            _FULL.but(history=False),
            True,
            True,
            static_check=True,
            repair=True,
            template_answers=True,
            values=True,
            vote_candidates=3,
        ),
        Strategy(
            "lora",
            "template + the project's LoRA adapter",
            _FULL.but(history=False),
            True,
            True,
            static_check=True,
            repair=True,
            adapter=True,
            template_answers=True,
        ),
        Strategy(
            "product",
            "the services' wiring and retrieval settings without a project adapter: what a project gets before "
            "its first LoRA training",
            _FULL,
            True,
            True,
            static_check=True,
            repair=True,
            product_wiring=True,
        ),
        Strategy(
            "full",
            "everything on: the services' wiring, retrieval settings and the project's adapter if trained",
            _FULL,
            True,
            True,
            static_check=True,
            repair=True,
            adapter=True,
            product_wiring=True,
        ),
    )
}

DEFAULT_STRATEGIES: tuple[str, ...] = (
    "baseline",
    "prompt",
    "rag",
    "fewshot",
    "repair",
    "template",
    "values",
    "vote",
    "product",
    "full",
)


def variant(spec: str) -> Strategy:
    """``BASE:SETTING=VALUE[,SETTING=VALUE...]`` (settings by field name, e.g. ``product:repair_rounds=0``): the
    strategy BASE with those settings changed, named ``BASE[SETTING=VALUE,...]``."""
    base_name, sep, assignments = spec.partition(":")
    if not sep or base_name not in STRATEGIES:
        raise ValueError(
            f"variant {spec!r}: expected BASE:SETTING=VALUE with BASE one of {', '.join(STRATEGIES)}"
        )
    overrides: list[tuple[str, str]] = []
    for assignment in assignments.split(","):
        key, eq, value = assignment.partition("=")
        key = key.strip().lower().removeprefix("querylift_")
        if not eq or key not in Settings.model_fields:
            raise ValueError(f"variant {spec!r}: {assignment!r} is not SETTING=VALUE with a known setting")
        if key.startswith(("lora_", "training_")):
            # One adapter is trained per run, with the run's settings: another one needs its own run.
            raise ValueError(f"variant {spec!r}: training settings ({key}) are set for the whole run")
        overrides.append((key, value.strip()))
    base = STRATEGIES[base_name]
    named = ",".join(f"{k}={v}" for k, v in overrides)
    strategy = dataclasses.replace(base, name=f"{base_name}[{named}]", overrides=tuple(overrides))
    strategy.settings_for(Settings())  # a value the setting cannot take fails here, before anything slow
    return strategy


def resolve(names: list[str] | None, variants: list[str] | None = None) -> list[Strategy]:
    chosen = names or list(DEFAULT_STRATEGIES)
    unknown = [n for n in chosen if n not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")
    resolved = [STRATEGIES[n] for n in dict.fromkeys(chosen)]
    return resolved + [variant(v) for v in dict.fromkeys(variants or [])]
