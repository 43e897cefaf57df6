"""The README's settings table is generated from Settings; it must not drift."""

from pathlib import Path

from services.infra.settings_doc import replace_in_readme

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_settings_table_matches_settings() -> None:
    text = README.read_text()
    assert replace_in_readme(text) == text, (
        "run: python -c 'from services.infra.settings_doc import *' (see module)"
    )


def test_readme_starts_with_the_two_commands() -> None:
    head = README.read_text().split("\n## ")[0]
    assert "make demo" in head and "make test" in head
