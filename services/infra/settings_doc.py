"""The settings table of the README, generated from :class:`Settings` so the two cannot drift."""

from __future__ import annotations

from pydantic import AliasChoices

from services.infra.settings import Settings


def env_names(field_name: str) -> list[str]:
    info = Settings.model_fields[field_name]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(a) for a in alias.choices]
    return [f"QUERYLIFT_{field_name.upper()}"]


def settings_markdown() -> str:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        default = info.default
        shown = "" if default is None else str(default)
        lines.append(f"| `{'` / `'.join(env_names(name))}` | `{shown}` | {info.description or ''} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_markdown())


def replace_in_readme(text: str) -> str:
    begin, end = "<!-- settings:begin -->", "<!-- settings:end -->"
    a, b = text.index(begin) + len(begin), text.index(end)
    return text[:a] + "\n" + settings_markdown() + "\n" + text[b:]
