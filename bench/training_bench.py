"""LoRA training speed on the 0.5B benchmark model architecture (Qwen2.5-Coder-0.5B) on CPU.

Two sources: ``gguf`` runs the production path (:func:`train_lora` on the real Qwen GGUF, dequantized), and
``random`` builds the same architecture from its config with random weights (no model file needed; the
arithmetic per step is identical). Inputs are synthetic chat examples of about ``seq_tokens`` tokens, so the
numbers measure compute, not data.

    python -m bench.training_bench --steps 6 --source gguf --out bench/results/training_bench.json

``--varying-tokens`` gives each example a part of its own after the shared system prompt (a serving prompt's
examples and question), and ``--shared-prefix both`` times training with and without the shared prefix run
once per step, interleaved round by round (gguf source):

    python -m bench.training_bench --steps 3 --seq-tokens 770 --varying-tokens 330 --shared-prefix both --rounds 2

``--precision both`` does the same for fp32 and bf16 autocast (``QUERYLIFT_LORA_PRECISION``; the default,
``auto``, is bf16 on a CPU with bf16 instructions, so figures from before 2026-12-07 are ``--precision fp32``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from services.infra.llm.model_files import resolve_gguf
from services.training.lora_train import train_lora

QWEN_05B: dict[str, Any] = {
    "hidden_size": 896,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "max_position_embeddings": 32768,
}
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _synthetic_records(n: int, seq_tokens: int, varying_tokens: int = 0) -> list[dict[str, Any]]:
    # ~1.3 tokens per word for this kind of text; the schema-like filler stands in for the prompt's schema.
    filler = " ".join(f"table_{i}(id, name_{i}, amount_{i} -> other_{i}.id)" for i in range(seq_tokens // 12))

    def own(i: int) -> str:  # stands in for a serving prompt's retrieved examples, different per question
        return " ".join(
            f"Q: rows of t{i}_{j} over {j}? SQL: SELECT * FROM t{i}_{j}" for j in range(varying_tokens // 16)
        )

    return [
        {
            "messages": [
                {"role": "system", "content": "You write SQLite SQL queries. " + filler},
                {
                    "role": "user",
                    "content": own(i) + f"\nhow many rows in table_{i} have amount_{i} above {i * 10}",
                },
                {
                    "role": "assistant",
                    "content": f"```sql\nSELECT COUNT(*) FROM table_{i} WHERE amount_{i} > {i * 10}\n```",
                },
            ]
        }
        for i in range(n)
    ]


def _bench_gguf(
    steps: int,
    batch_size: int,
    seq_tokens: int,
    threads: int,
    cache_dir: Path,
    varying_tokens: int = 0,
    shared_prefix: bool = True,
    precision: str = "auto",
) -> dict[str, Any]:
    gguf = resolve_gguf("qwen2.5-coder-0.5b-instruct", cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "project_id": "bench",
            "version": 1,
            "base_model": str(gguf),
            "model_cache_dir": None,  # no 2 GB float copy for a benchmark
            "adapter_dir": tmp,
            "train": _synthetic_records(batch_size * steps, seq_tokens, varying_tokens),
            "validation": [],
            "lora_r": 8,
            "lora_alpha": 16,
            "lora_dropout": 0.05,
            "target_modules": TARGET_MODULES,
            "epochs": 1,
            "learning_rate": 2e-4,
            "batch_size": batch_size,
            "max_steps": steps,
            "seed": 13,
            "max_seq_len": 4096,
            "device": "cpu",
            "threads": threads,
            "shared_prefix": shared_prefix,
            "precision": precision,
        }
        step_times: list[float] = []
        last = [time.perf_counter()]

        def progress(event: dict[str, Any]) -> None:
            now = time.perf_counter()
            if event.get("stage") == "training" and event.get("step", 0) >= 1:
                step_times.append(now - last[0])
            last[0] = now

        metrics = train_lora(config, progress=progress)
    return {
        "total_seconds": metrics["seconds"],
        "load_seconds": metrics["load_seconds"],
        "train_seconds": metrics["train_seconds"],
        "step_seconds": step_times,
        "first_loss": metrics["first_loss"],
        "train_loss": metrics["train_loss"],
        "shared_prefix_tokens_saved": metrics["shared_prefix_tokens_saved"],
        "precision": metrics["precision"],
    }


def _bench_random(steps: int, batch_size: int, seq_tokens: int, threads: int) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    started = time.perf_counter()
    torch.manual_seed(13)
    base: Any = Qwen2ForCausalLM(Qwen2Config(**QWEN_05B))
    model: Any = get_peft_model(
        base,
        LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.05, target_modules=TARGET_MODULES, task_type="CAUSAL_LM"
        ),
    )
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4)
    load_seconds = time.perf_counter() - started
    ids = torch.randint(0, QWEN_05B["vocab_size"], (batch_size, seq_tokens))
    labels = ids.clone()
    labels[:, : seq_tokens - 32] = -100  # loss on the answer only, as in training
    step_times = []
    losses = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - t)
        losses.append(float(loss))
    return {
        "total_seconds": time.perf_counter() - started,
        "load_seconds": load_seconds,
        "train_seconds": sum(step_times),
        "step_seconds": step_times,
        "first_loss": losses[0],
        "train_loss": losses[-1],
    }


def run_training_bench(
    *,
    source: str = "gguf",
    steps: int = 6,
    batch_size: int = 4,
    seq_tokens: int = 384,
    threads: int | None = None,
    cache_dir: Path = Path(".querylift/models"),
    varying_tokens: int = 0,
    shared_prefix: bool = True,
    precision: str = "auto",
) -> dict[str, Any]:
    """Seconds per LoRA optimizer step (first step excluded as warm-up) and total time; a plain function."""
    import torch

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if source == "gguf":
        raw = _bench_gguf(
            steps, batch_size, seq_tokens, threads, cache_dir, varying_tokens, shared_prefix, precision
        )
    elif source == "random":
        raw = _bench_random(steps, batch_size, seq_tokens, threads)
    else:
        raise ValueError("source must be 'gguf' or 'random'")
    steady = raw["step_seconds"][1:] or raw["step_seconds"]
    return {
        "model": "qwen2.5-coder-0.5b-instruct",
        "source": source,
        "device": "cpu",
        "threads": threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "steps": steps,
        "batch_size": batch_size,
        "seq_tokens": seq_tokens,
        "varying_tokens": varying_tokens,
        "shared_prefix": shared_prefix if source == "gguf" else False,
        "shared_prefix_tokens_saved": raw.get("shared_prefix_tokens_saved", 0),
        # What training used (auto resolved); the random source trains in fp32.
        "precision": raw.get("precision", "fp32"),
        "lora": {"r": 8, "alpha": 16, "target_modules": TARGET_MODULES},
        "seconds_per_step": sum(steady) / len(steady),
        "first_step_seconds": raw["step_seconds"][0] if raw["step_seconds"] else None,
        "load_seconds": raw["load_seconds"],
        "train_seconds": raw["train_seconds"],
        "total_seconds": raw["total_seconds"],
        "first_loss": raw["first_loss"],
        "last_loss": raw["train_loss"],
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _table(result: dict[str, Any]) -> str:
    rows = [
        ("model", f"{result['model']} ({result['source']} weights)"),
        ("device / threads", f"{result['device']} / {result['threads']}"),
        (
            "steps x batch x tokens",
            f"{result['steps']} x {result['batch_size']} x ~{result['seq_tokens']} + ~{result['varying_tokens']}",
        ),
        ("shared prefix once per step", "on" if result["shared_prefix"] else "off"),
        ("precision", result["precision"]),
        ("seconds per step", f"{result['seconds_per_step']:.2f}"),
        (
            "first step (warm-up)",
            f"{result['first_step_seconds']:.2f}" if result["first_step_seconds"] else "-",
        ),
        ("model load", f"{result['load_seconds']:.1f} s"),
        ("total", f"{result['total_seconds']:.1f} s"),
        ("loss first → last", f"{result['first_loss']:.3f} → {result['last_loss']:.3f}"),
        (
            "machine load average",
            f"{result['load_average']:.1f}" if result["load_average"] is not None else "-",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", choices=["gguf", "random"], default="gguf")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-tokens", type=int, default=384)
    parser.add_argument("--varying-tokens", type=int, default=0)
    parser.add_argument("--shared-prefix", choices=["on", "off", "both"], default="on")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "both"],
        default="auto",
        help="training arithmetic (gguf source; both: fp32 and bf16)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with a 'both': rounds of every build, the order reversed each round",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=Path(".querylift/models"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/training_bench.json"))
    args = parser.parse_args(argv)
    if args.source == "random" and args.precision in ("bf16", "both"):
        parser.error("--precision applies to the gguf source (the random one trains in fp32)")
    shared_options = {"on": [True], "off": [False], "both": [True, False]}[args.shared_prefix]
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    builds = [(shared, precision) for shared in shared_options for precision in precisions]
    # Interleaved, the first build alternating, so the builds share the machine's drift.
    runs = [
        b
        for r in range(args.rounds if len(builds) > 1 else 1)
        for b in (builds if r % 2 == 0 else builds[::-1])
    ]
    results = []
    for shared, precision in runs:
        result = run_training_bench(
            source=args.source,
            steps=args.steps,
            batch_size=args.batch_size,
            seq_tokens=args.seq_tokens,
            threads=args.threads,
            cache_dir=args.cache_dir,
            varying_tokens=args.varying_tokens,
            shared_prefix=shared,
            precision=precision,
        )
        print(_table(result) + "\n", flush=True)
        results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
