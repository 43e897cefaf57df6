"""A peft LoRA adapter as a llama.cpp GGUF LoRA file, so the GGUF backend can serve it without transformers.

llama.cpp applies an adapter as ``W x + (alpha / r) * B (A x)`` with ``alpha`` from ``adapter.lora.alpha`` and
``r`` from each ``lora_b``'s shape: the same scale as plain peft LoRA, so the weights are copied unscaled.
Tensors are named after the base GGUF's tensor (``blk.N.attn_q.weight.lora_a``); ``lora_a`` keeps peft's
``[r, n_in]`` layout and ``lora_b`` its ``[n_out, r]``, which in ggml's reversed dimension order is exactly
what llama.cpp checks against the base tensor.

llama.cpp's HF converter reorders the rows of q_proj and k_proj for the llama architecture (its rotary
embedding pairs dimensions ``2i, 2i+1`` of a head where HF pairs ``i, i + d/2``); the GGUF base holds the
reordered rows, so ``lora_b`` of q and k must be reordered the same way or the adapter would write into the
wrong dimensions. Qwen2's converter keeps HF's order.

Anything this conversion cannot reproduce exactly (rsLoRA, DoRA, per-module ranks, extra trained modules,
an unknown architecture) is refused with GGUFLoraError instead of being served subtly wrong.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from services.core.llm.base import GGUF_LORA_FILE

# HF module name → llama.cpp tensor name inside ``blk.N``.
_TENSOR_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
# Architectures whose q/k rows the converter permutes for rotary embeddings (see the module docstring).
_ROPE_PERMUTED = {"llama"}
_SUPPORTED_ARCHITECTURES = {"llama", "qwen2"}
_PEFT_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
# adapter_config.json options that change what the weights mean; any truthy value is refused.
_UNSUPPORTED_OPTIONS = (
    "use_rslora",
    "use_dora",
    "rank_pattern",
    "alpha_pattern",
    "modules_to_save",
    "fan_in_fan_out",
    "lora_bias",
    "layer_replication",
    "target_parameters",
    "trainable_token_indices",
    "alora_invocation_tokens",
)


class GGUFLoraError(ValueError):
    """The adapter cannot be expressed as a llama.cpp LoRA for this base model; the message says why."""


def _rope_permute_rows(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of each head reordered from HF's half-split rotary layout to llama.cpp's interleaved one."""
    rows = weights.shape[0]
    if n_head <= 0 or rows % (2 * n_head):
        raise GGUFLoraError(f"{rows} rows cannot be split into {n_head} rotary heads")
    per_half = rows // n_head // 2
    # [head, half, i] → [head, i, half]: row i of the second half lands right after row i of the first.
    return weights.reshape(n_head, 2, per_half, -1).swapaxes(1, 2).reshape(weights.shape)


def _read_config(adapter_dir: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise GGUFLoraError(f"no readable adapter_config.json in {adapter_dir}: {exc}") from exc
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise GGUFLoraError(f"not a LoRA adapter: peft_type {config.get('peft_type')!r}")
    used = [k for k in _UNSUPPORTED_OPTIONS if config.get(k)]
    if used:
        raise GGUFLoraError(f"adapter options llama.cpp cannot apply: {', '.join(used)}")
    if config.get("bias", "none") != "none":
        raise GGUFLoraError(f"adapter trains biases (bias={config['bias']!r}); llama.cpp LoRA has none")
    return config


def _read_lora_pairs(adapter_dir: Path) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """{(layer, hf module): {"A": [r, n_in], "B": [n_out, r]}} as float32."""
    from safetensors import safe_open

    pairs: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    # torch, not numpy, as the framework: numpy has no bfloat16, and peft may save in the training dtype.
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
        for key in f.keys():
            match = _PEFT_KEY.search(key)
            if match is None or match.group(2) not in _TENSOR_NAMES:
                raise GGUFLoraError(f"adapter tensor {key!r} has no llama.cpp counterpart")
            layer, module, side = int(match.group(1)), match.group(2), match.group(3)
            pairs.setdefault((layer, module), {})[side] = f.get_tensor(key).float().numpy()
    if not pairs:
        raise GGUFLoraError(f"adapter in {adapter_dir} holds no LoRA tensors")
    return pairs


def _field(reader: Any, key: str) -> Any:
    field = reader.get_field(key)
    if field is None:
        raise GGUFLoraError(f"base GGUF lacks {key}")
    return field.contents()


def export_gguf_lora(adapter_dir: Path, base_gguf: Path, out: Path) -> Path:
    """Write ``out`` (a GGUF LoRA for ``base_gguf``) from the peft adapter in ``adapter_dir``; returns ``out``.

    The file appears atomically: it is written next to ``out`` and renamed when complete.
    """
    from gguf import GGUFReader, GGUFType, GGUFWriter, Keys

    adapter_dir, out = Path(adapter_dir), Path(out)
    config = _read_config(adapter_dir)
    pairs = _read_lora_pairs(adapter_dir)

    reader = GGUFReader(base_gguf)
    arch = str(_field(reader, Keys.General.ARCHITECTURE))
    if arch not in _SUPPORTED_ARCHITECTURES:
        raise GGUFLoraError(
            f"base architecture {arch!r} is not supported (known: {', '.join(sorted(_SUPPORTED_ARCHITECTURES))})"
        )
    heads = {
        "q_proj": int(_field(reader, Keys.Attention.HEAD_COUNT.format(arch=arch))),
        "k_proj": int(_field(reader, Keys.Attention.HEAD_COUNT_KV.format(arch=arch))),
    }
    # ggml order: shape[0] is the input width, shape[1] the output width.
    base_shapes = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    rank, alpha = int(config["r"]), float(config["lora_alpha"])

    tensors: list[tuple[str, np.ndarray]] = []
    for (layer, module), pair in sorted(pairs.items()):
        name = f"blk.{layer}.{_TENSOR_NAMES[module]}.weight"
        if set(pair) != {"A", "B"}:
            raise GGUFLoraError(f"{name}: the adapter holds lora_{next(iter(pair))} without its pair")
        a, b = pair["A"], pair["B"]
        if name not in base_shapes:
            raise GGUFLoraError(f"base GGUF has no tensor {name}: the adapter was trained on another model")
        n_in, n_out = base_shapes[name][:2]
        if a.shape != (rank, n_in) or b.shape != (n_out, rank):
            raise GGUFLoraError(
                f"{name}: lora_a {a.shape} / lora_b {b.shape} do not fit the base tensor "
                f"(in {n_in}, out {n_out}, rank {rank})"
            )
        if arch in _ROPE_PERMUTED and module in heads:
            b = _rope_permute_rows(b, heads[module])
        tensors += [(f"{name}.lora_a", a), (f"{name}.lora_b", b)]

    partial = out.with_name(f".{out.name}.partial")
    writer = GGUFWriter(partial, arch)
    try:
        writer.add_type(GGUFType.ADAPTER)
        writer.add_string(Keys.Adapter.TYPE, "lora")
        writer.add_float32(Keys.Adapter.LORA_ALPHA, alpha)
        for name, data in tensors:
            writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(partial, out)
    return out


__all__ = ["GGUF_LORA_FILE", "GGUFLoraError", "export_gguf_lora"]
