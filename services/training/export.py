"""Export a project's model as a standalone HF folder: the adapter merged into the base, plus an Ollama Modelfile.

``ollama create <name> -f <out>/Modelfile`` imports the folder (safetensors) as a model that answers exactly as
querylift's adapter does, with greedy decoding (temperature 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.infra.llm.base_model import load_base_model

# Ollama's Go template for ChatML, the chat format of both supported base models (SmolLM2, Qwen2.5).
_CHATML_TEMPLATE = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"


@dataclass
class ExportResult:
    out_dir: Path
    base_model: str
    adapter_path: str | None
    files: list[str]


def modelfile_text(tokenizer: Any) -> str:
    lines = ["FROM .", ""]
    template = getattr(tokenizer, "chat_template", None) or ""
    if "<|im_start|>" in template:
        lines += [f'TEMPLATE """{_CHATML_TEMPLATE}"""', 'PARAMETER stop "<|im_end|>"']
    elif tokenizer.eos_token:
        # Another chat format: Ollama derives the template from the tokenizer files in the folder.
        lines.append(f'PARAMETER stop "{tokenizer.eos_token}"')
    lines += ["PARAMETER temperature 0", ""]
    return "\n".join(lines)


def export_merged(
    base_model: str,
    adapter_path: str | None,
    out_dir: Path,
    *,
    cache_dir: Path | None = None,
    info: dict[str, Any] | None = None,
) -> ExportResult:
    """Merge ``adapter_path`` (None: the base model as is) into ``base_model`` and save it under ``out_dir``."""

    model, tokenizer = load_base_model(base_model, cache_dir=cache_dir, device="cpu")
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "Modelfile").write_text(modelfile_text(tokenizer))
    (out_dir / "querylift.json").write_text(
        json.dumps(
            {"base_model": base_model, "adapter_path": adapter_path, **(info or {})}, indent=2, default=str
        )
    )
    return ExportResult(out_dir, base_model, adapter_path, sorted(p.name for p in out_dir.iterdir()))
