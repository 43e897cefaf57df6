"""peft adapters as llama.cpp GGUF LoRAs: conversion, numerical agreement with peft, and serving by the GGUF backend.

Real components throughout: SmolLM2-135M (the packaged GGUF, dequantized by transformers), peft, llama.cpp.
The agreement test runs llama.cpp on an F32 copy of the base GGUF, so both runtimes compute with the very
same weights and the adapter's effect can be compared closely (the Q4_1 file quantizes activations too,
and that noise is as large as a small adapter's effect).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.core.llm.base import (
    GGUF_LORA_FILE,
    AdapterMismatch,
    AdapterRef,
    ChatMessage,
    Completion,
)
from services.generation.serving import AdapterRoutingLLM
from services.infra.llm import gguf as gguf_backend
from services.infra.llm.base_model import SMOLLM2, load_base_model, resolve_base_model
from services.infra.llm.gguf import GGUFLLM, _model_params_without_extra_buffers
from services.infra.llm.scripted import ScriptedLLM
from services.infra.settings import Settings
from services.training.gguf_lora import GGUFLoraError, export_gguf_lora
from services.training.lora_train import make_config, train_lora

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

PROMPTS = [
    "SELECT name FROM users WHERE",
    "The capital of France is",
    "def add(a, b):\n    return",
    "how many employees work in sales? SQL:",
]
ALL_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _base_gguf() -> Path:
    source = resolve_base_model(SMOLLM2)
    assert source.gguf_file is not None
    return source.folder / source.gguf_file


def _llama(model_path: Path, lora_path: Path | None = None) -> Any:
    from llama_cpp import GGML_TYPE_F32, Llama

    # As GGUFLLM loads: the repacked CPU buffers crash some CPUs once a LoRA is applied.
    with _model_params_without_extra_buffers():
        return Llama(
            model_path=str(model_path),
            lora_path=str(lora_path) if lora_path else None,
            n_ctx=128,
            n_threads=2,
            logits_all=True,
            seed=0,
            # An F32 KV cache: the default F16 one rounds the large keys of a deliberately strong adapter.
            type_k=GGML_TYPE_F32,
            type_v=GGML_TYPE_F32,
            verbose=False,
        )


def _f32_copy(src: Path, dst: Path) -> Path:
    """The GGUF with every tensor dequantized to F32 (same metadata, same llama.cpp row order)."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize

    reader = GGUFReader(src)
    writer = GGUFWriter(dst, str(reader.get_field("general.architecture").contents()))  # type: ignore[union-attr]
    for key, field in reader.fields.items():
        # The writer adds the architecture itself; the file type and quantization no longer hold.
        if key.startswith("GGUF.") or key in (
            "general.architecture",
            "general.file_type",
            "general.quantization_version",
        ):
            continue
        sub_type = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub_type)
    for tensor in reader.tensors:
        data = dequantize(tensor.data, tensor.tensor_type)
        writer.add_tensor(
            tensor.name, data.reshape([int(d) for d in reversed(tensor.shape)]).astype(np.float32)
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


# --- fixtures -------------------------------------------------------------------------------------------------


@dataclass
class Trained:
    settings: Settings
    folder: Path
    metrics: dict[str, Any]
    project_id: str = "shop"
    version: int = 1

    def ref(self, project_id: str | None = None, folder: Path | None = None) -> AdapterRef:
        return AdapterRef(project_id or self.project_id, self.version, str(folder or self.folder))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf-lora-models")


@pytest.fixture(scope="module")
def trained(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A real (tiny) training run on SmolLM2's GGUF: train_lora writes adapter.gguf next to the peft files."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("gguf-lora-data"),
        llm_model=SMOLLM2,
        llm_context_tokens=1024,
        llm_threads=2,
        log_json=False,
    )
    records = [
        {
            "messages": [
                {"role": "system", "content": "Answer with one SQL query."},
                {"role": "user", "content": f"how many employees work in {dept}"},
                {"role": "assistant", "content": f"SELECT COUNT(*) FROM employees WHERE dept = '{dept}'"},
            ]
        }
        for dept in ("sales", "support", "research", "finance", "legal")
    ]
    config = make_config(
        settings,
        project_id="shop",
        version=1,
        train=records[:4],
        validation=records[4:],
        base_model=SMOLLM2,
        model_cache_dir=str(cache_dir),
        max_steps=2,
        batch_size=2,
        max_seq_len=256,
        device="cpu",
        threads=2,
    )
    metrics = train_lora(config)
    return Trained(settings, Path(metrics["adapter_path"]), metrics)


@pytest.fixture(scope="module")
def hf_base(cache_dir: Path) -> tuple[Any, Any]:
    model, tokenizer = load_base_model(SMOLLM2, cache_dir=cache_dir, device="cpu")
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def f32_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _f32_copy(_base_gguf(), tmp_path_factory.mktemp("gguf-f32") / "smollm2-f32.gguf")


@pytest.fixture(scope="module")
def llama_f32(f32_base: Path) -> Iterator[Any]:
    model = _llama(f32_base)
    yield model
    model.close()


# --- conversion ---------------------------------------------------------------------------------------------


def test_training_writes_a_gguf_lora_that_llama_cpp_loads(trained: Trained) -> None:
    from gguf import GGUFReader

    lora = trained.folder / GGUF_LORA_FILE
    assert lora.is_file() and trained.metrics["gguf_adapter"] == GGUF_LORA_FILE
    assert not list(trained.folder.glob(".*.partial")) and not trained.folder.with_name("v1.partial").exists()
    reader = GGUFReader(lora)

    def field(key: str) -> Any:
        value = reader.get_field(key)
        assert value is not None, key
        return value.contents()

    assert field("general.architecture") == "llama" and field("general.type") == "adapter"
    assert field("adapter.type") == "lora" and field("adapter.lora.alpha") == trained.settings.lora_alpha
    shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}
    r = trained.settings.lora_r
    # 30 blocks x the four attention projections the settings target, an A and a B each.
    assert len(shapes) == 30 * 4 * 2
    # ggml order (input width first): A maps 576 → r, B maps r → 192 for k (3 of 9 heads share keys).
    assert shapes["blk.0.attn_q.weight.lora_a"] == [576, r]
    assert shapes["blk.29.attn_k.weight.lora_b"] == [r, 192]

    model = _llama(_base_gguf(), lora)
    try:
        assert model._lora_adapter is not None
        ids = model.tokenize(b"SELECT", add_bos=False)
        model.eval(ids)
        assert np.isfinite(np.asarray(model.scores[len(ids) - 1])).all()
    finally:
        model.close()


def test_unsupported_adapter_options_are_refused(trained: Trained, tmp_path: Path) -> None:
    folder = tmp_path / "rslora"
    shutil.copytree(trained.folder, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": True}))
    with pytest.raises(GGUFLoraError, match="use_rslora"):
        export_gguf_lora(folder, _base_gguf(), tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists() and not list(tmp_path.glob(".*.partial"))


# --- agreement with peft ------------------------------------------------------------------------------------


def _peft_adapter(hf_base: tuple[Any, Any], targets: list[str], std: float, out: Path) -> Any:
    """A peft model whose LoRA weights are large and deterministic (seeded), saved to ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model

    # rank 4, alpha 16: a scale of 4, so a conversion that lost alpha / r would be far off.
    config = LoraConfig(r=4, lora_alpha=16, target_modules=targets, lora_dropout=0.0, bias="none")
    model = get_peft_model(copy.deepcopy(hf_base[0]), config)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    model.eval()
    model.save_pretrained(str(out))
    return model


@pytest.mark.parametrize(
    ("targets", "std"),
    [(ALL_MODULES, 0.08), (["q_proj", "k_proj"], 0.15)],
    ids=["all-modules", "rotary-q-k-only"],
)
def test_gguf_lora_moves_logits_like_peft(
    hf_base: tuple[Any, Any],
    f32_base: Path,
    llama_f32: Any,
    tmp_path: Path,
    targets: list[str],
    std: float,
) -> None:
    """Next-token logits of llama.cpp + GGUF LoRA match transformers + peft, far closer than the adapter's shift.

    A conversion that dropped the q/k row permutation, or applied another scale than alpha / r, is off by a
    sizeable share of the shift (measured on the first prompt: q/k rows unpermuted 0.7 and 2.0 of it, alpha
    doubled 1.0 and 1.3; the correct conversion under 0.001). The q/k-only case isolates the permutation.
    """
    import torch

    folder = tmp_path / "adapter"
    peft_model = _peft_adapter(hf_base, targets, std, folder)
    lora = export_gguf_lora(folder, _base_gguf(), folder / GGUF_LORA_FILE)
    llama_lora = _llama(f32_base, lora)
    tokenizer = hf_base[1]

    def llama_logits(model: Any, ids: list[int]) -> np.ndarray:
        model.reset()
        model.eval(ids)
        return np.array(model.scores[len(ids) - 1])

    flipped = 0
    try:
        for prompt in PROMPTS:
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                hf_lora = peft_model(torch.tensor([ids])).logits[0, -1].numpy()
                with peft_model.disable_adapter():
                    hf_plain = peft_model(torch.tensor([ids])).logits[0, -1].numpy()
            cpp_plain, cpp_lora = llama_logits(llama_f32, ids), llama_logits(llama_lora, ids)
            shift = np.linalg.norm(hf_lora - hf_plain)
            error = np.linalg.norm(cpp_lora - hf_lora) / shift
            print(f"{prompt!r}: shift {shift:.1f}, error/shift {error:.4f}")
            # Both runtimes compute the same base model; the adapter's shift dwarfs what they differ by.
            assert np.linalg.norm(cpp_plain - hf_plain) < 0.01 * shift
            assert error < 0.05, (prompt, error)
            assert cpp_lora.argmax() == hf_lora.argmax(), prompt
            flipped += int(hf_lora.argmax() != hf_plain.argmax())
    finally:
        llama_lora.close()
    assert flipped >= 3, "the adapter should change the next token for most prompts"


# --- serving ------------------------------------------------------------------------------------------------


class _NoTransformers:
    """The routing's transformers factory: counts calls and answers like a scripted model."""

    def __init__(self) -> None:
        self.built = 0
        self.llm = ScriptedLLM(default="SELECT 'transformers'")

    def __call__(self) -> ScriptedLLM:
        self.built += 1
        return self.llm


MESSAGES = [ChatMessage(role="user", content="how many employees work in sales")]


async def _ask(llm: AdapterRoutingLLM, ref: AdapterRef | None) -> Completion:
    return await llm.complete(MESSAGES, max_tokens=8, adapter=ref)


async def test_adapter_with_gguf_lora_is_served_by_the_gguf_backend(trained: Trained) -> None:
    factory = _NoTransformers()
    base = GGUFLLM(trained.settings)
    llm = AdapterRoutingLLM(base, factory)
    ref = trained.ref()
    assert base.adapter_file(ref) == trained.folder / GGUF_LORA_FILE
    adapted = await _ask(llm, ref)
    plain = await _ask(llm, None)
    assert adapted.adapter_version == trained.version and adapted.model == SMOLLM2
    assert plain.adapter_version is None
    assert factory.built == 0, "an adapter with a GGUF LoRA must not need the transformers backend"
    key = base._key(str(trained.folder / GGUF_LORA_FILE))
    assert key in gguf_backend._models


async def test_adapter_without_gguf_lora_or_for_another_model_goes_to_transformers(
    trained: Trained, tmp_path: Path, f32_base: Path
) -> None:
    peft_only = tmp_path / "peft-only"
    shutil.copytree(trained.folder, peft_only)
    (peft_only / GGUF_LORA_FILE).unlink()
    factory = _NoTransformers()
    llm = AdapterRoutingLLM(GGUFLLM(trained.settings), factory)
    answer = await _ask(llm, trained.ref(folder=peft_only))
    assert factory.built == 1 and answer.text == "SELECT 'transformers'"

    # Served from another file (same architecture and shapes, so llama.cpp would take the LoRA): not the
    # model the adapter was converted for, so it is not applied there.
    other = GGUFLLM(trained.settings, model=str(f32_base))
    assert other.adapter_file(trained.ref()) is None
    routed = AdapterRoutingLLM(other, factory)
    answer = await _ask(routed, trained.ref())
    assert answer.text == "SELECT 'transformers'" and factory.llm.calls[-1].adapter == trained.ref()


async def test_another_projects_adapter_is_refused_not_served(trained: Trained) -> None:
    factory = _NoTransformers()
    llm = AdapterRoutingLLM(GGUFLLM(trained.settings), factory)
    with pytest.raises(AdapterMismatch):
        await _ask(llm, trained.ref(project_id="intruder"))
    assert factory.built == 0


async def test_gguf_keeps_at_most_cache_size_adapter_models(trained: Trained, tmp_path: Path) -> None:
    settings = trained.settings.model_copy(update={"adapter_cache_size": 1})
    base = GGUFLLM(settings)
    second = tmp_path / "v2"
    shutil.copytree(trained.folder, second)
    refs = [trained.ref(), AdapterRef(trained.project_id, 2, str(second))]
    for ref in refs:
        assert (await base.complete(MESSAGES, max_tokens=4, adapter=ref)).adapter_version == ref.version
    loaded = [k.lora_path for k in gguf_backend._models if k.lora_path is not None]
    assert loaded == [str(second / GGUF_LORA_FILE)]
