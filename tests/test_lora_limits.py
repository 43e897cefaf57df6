"""A CPU's limits on a LoRA run and the arithmetic it trains in: a time budget stops training after the step
that reaches it (the adapter so far is evaluated and kept), and bf16 autocast, which ``auto`` picks on a GPU
that supports it, runs the same loop. A real (tiny) run on SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from services.infra.llm.base_model import SMOLLM2
from services.infra.settings import Settings
from services.training.lora_train import ADAPTER_WEIGHTS, autocast_dtype, make_config, train_lora


@pytest.mark.parametrize(
    ("precision", "device", "expected"),
    [
        ("auto", "cpu", None),  # fp32 on a CPU unless asked
        ("fp32", "cuda", None),
        ("bf16", "cpu", torch.bfloat16),
        ("bf16", "cuda:0", torch.bfloat16),
    ],
)
def test_autocast_dtype_follows_the_setting_and_the_device(
    precision: str, device: str, expected: torch.dtype | None
) -> None:
    assert autocast_dtype(precision, device) == expected


@pytest.mark.real_model
@pytest.mark.slow
def test_a_time_budget_stops_training_after_the_step_that_reaches_it_in_bf16(tmp_path: Path) -> None:
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
    metrics = train_lora(config)
    assert metrics["steps"] == 1 and metrics["planned_steps"] == 4 and metrics["stopped"] == "time_budget"
    assert metrics["precision"] == "bf16" and len(metrics["losses"]) == 1
    assert metrics["eval_loss"] is not None and metrics["eval_loss"] == metrics["eval_loss"]  # not NaN
    folder = Path(metrics["adapter_path"])
    assert (folder / ADAPTER_WEIGHTS).is_file()
    assert json.loads((folder / "metrics.json").read_text())["stopped"] == "time_budget"
