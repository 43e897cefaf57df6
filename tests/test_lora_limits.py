"""A CPU's limits on a LoRA run and the arithmetic it trains in: gradients accumulated over one example at a time
agree with the whole batch's; a time budget stops training after the step
that reaches it (the adapter so far is evaluated and kept), and bf16 autocast, which ``auto`` picks on a GPU
or a CPU that supports it natively, runs the same loop. A real (tiny) run on SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from services.infra.llm.base_model import SMOLLM2
from services.infra.settings import Settings
from services.training.lora_train import (
    ADAPTER_WEIGHTS,
    _collate,
    answer_loss,
    autocast_dtype,
    make_config,
    micro_batches,
    train_lora,
)


@pytest.mark.parametrize(
    ("precision", "device", "native_bf16", "expected"),
    [
        ("auto", "cpu", False, None),  # fp32 on a CPU that would emulate bf16
        ("auto", "cpu", True, torch.bfloat16),  # bf16 where the CPU multiplies it in hardware
        ("fp32", "cpu", True, None),
        ("fp32", "cuda", True, None),
        ("auto", "cuda", False, torch.bfloat16),  # the GPU's own support decides (patched to yes below)
        ("bf16", "cpu", False, torch.bfloat16),
        ("bf16", "cuda:0", False, torch.bfloat16),
    ],
)
def test_autocast_dtype_follows_the_setting_and_the_device(
    precision: str,
    device: str,
    native_bf16: bool,
    expected: torch.dtype | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_, **__: True)
    assert autocast_dtype(precision, device) == expected


def test_auto_on_a_gpu_without_bf16_is_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_, **__: False)
    assert autocast_dtype("auto", "cuda") is None


def test_amx_alone_counts_as_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert autocast_dtype("auto", "cpu") == torch.bfloat16


def test_the_native_bf16_check_reads_this_cpu() -> None:
    from services.training.lora_train import cpu_has_native_bf16

    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    if not flags:
        pytest.skip("no /proc/cpuinfo to compare with")
    # Only the clear cases: a hypervisor may list AMX without enabling its tile state, which torch then denies.
    if "avx512_bf16" in flags:
        assert cpu_has_native_bf16()
    elif "amx_tile" not in flags:
        assert not cpu_has_native_bf16()


@pytest.mark.real_model
@pytest.mark.slow
def test_a_time_budget_the_load_used_up_still_trains_one_step_and_keeps_it_in_bf16(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", lora_time_budget_s=0.001, lora_precision="bf16", log_json=False
    )
    records = [
        {
            "messages": [
                {"role": "system", "content": "Answer with one SQL query."},
                {"role": "user", "content": f"how many orders came from {city}"},
                {"role": "assistant", "content": f"SELECT COUNT(*) FROM orders WHERE city = '{city}'"},
            ]
        }
        for city in ("lyon", "porto", "graz", "turku", "split", "brno")
    ]
    config = make_config(
        settings,
        project_id="shop",
        version=1,
        train=records[:5],
        validation=records[5:],
        base_model=SMOLLM2,
        model_cache_dir=str(tmp_path / "models"),
        max_steps=4,
        batch_size=2,
        max_seq_len=256,
        device="cpu",
        threads=2,
    )
    events: list[dict[str, object]] = []
    metrics = train_lora(config, progress=events.append)
    assert metrics["steps"] == 1 and metrics["planned_steps"] == 4 and metrics["stopped"] == "time_budget"
    # The progress of the one step is measured against the budget's stop, the plan stays in total_steps.
    (stepped,) = [e for e in events if e.get("stage") == "training" and e.get("step") == 1]
    assert stepped["expected_steps"] == 1 and stepped["total_steps"] == 4 and stepped["progress"] == 1.0
    assert metrics["precision"] == "bf16" and len(metrics["losses"]) == 1
    assert metrics["eval_loss"] is not None and metrics["eval_loss"] == metrics["eval_loss"]  # not NaN
    folder = Path(metrics["adapter_path"])
    assert (folder / ADAPTER_WEIGHTS).is_file()
    assert json.loads((folder / "metrics.json").read_text())["stopped"] == "time_budget"


def test_micro_batches_weigh_each_group_by_its_share_of_the_answer_tokens() -> None:
    # (ids, labels): prompt tokens are ignored (-100), position t predicts t+1, so the first label never counts.
    a = ([1, 2, 3, 4], [-100, -100, 3, 4])  # 2 answer tokens
    b = ([1, 2, 3, 4, 5, 6], [-100, 2, 3, 4, 5, 6])  # 5
    c = ([1, 2], [-100, -100])  # none
    assert [(len(g), round(s, 4)) for g, s in micro_batches([a, b, c], 1)] == [
        (1, 0.2857),
        (1, 0.7143),
        (1, 0.0),
    ]
    assert [(len(g), s) for g, s in micro_batches([a, b, c], 4)] == [(3, 1.0)]


def test_accumulated_micro_batches_give_the_whole_batchs_gradient() -> None:
    """The same step one example at a time or all together: the LoRA gradients agree (a small random model of
    the Llama architecture, so the check is about the arithmetic, not about a model file)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    model = get_peft_model(
        LlamaForCausalLM(config),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    batch = [
        ([5, 6, 7, 8, 9], [-100, -100, -100, 8, 9]),
        ([5, 6, 7, 10, 11, 12, 13], [-100, -100, -100, 10, 11, 12, 13]),
    ]

    def gradients(size: int) -> list[torch.Tensor]:
        model.zero_grad()
        for group, share in micro_batches(batch, size):
            loss, _ = answer_loss(model, _collate(group, pad_id=0))
            (loss * share).backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad and p.grad is not None]

    together, alone = gradients(2), gradients(1)
    assert len(together) == len(alone) > 0
    for g_all, g_one in zip(together, alone, strict=True):
        assert torch.allclose(g_all, g_one, atol=1e-6), (g_all - g_one).abs().max()
