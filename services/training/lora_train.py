"""One LoRA training run: base model + chat examples → a saved peft adapter with metrics.

A plain function of a JSON-able config, so it runs the same inside a Ray task, a subprocess or a test; it
knows nothing of Kafka or the database. The loss covers the assistant's tokens only (the SQL and the end of
turn), so the adapter learns to answer the prompt rather than to reproduce it.

The adapter is written to ``<adapter_dir>/<project>/v<version>.partial`` and renamed when complete, so a
crashed or cancelled run never leaves a directory that looks like a finished adapter. When the base model is
a GGUF file, the folder also holds the adapter as a llama.cpp GGUF LoRA (``adapter.gguf``), which the GGUF
backend serves directly.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.infra.llm.base_model import load_base_model, pick_device, resolve_base_model
from services.infra.settings import Settings
from services.training.gguf_lora import GGUF_LORA_FILE, export_gguf_lora
from services.training.time_budget import StepBudget

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]
ADAPTER_WEIGHTS = "adapter_model.safetensors"
IGNORE_INDEX = -100
#: Changes with anything in how an adapter is trained that its config does not show (the time budget's
#: meaning, the schedule, what ``precision=auto`` picks on a CPU): a config, and so a cached adapter, is never
#: taken for another trainer's.
TRAINER_REVISION = 3


def adapter_path(adapter_dir: Path | str, project_id: str, version: int) -> Path:
    return Path(adapter_dir) / project_id / f"v{version}"


def partial_path(config: dict[str, Any]) -> Path:
    """Where a run writes its adapter until it is complete (renamed to :func:`adapter_path` then)."""
    out_dir = adapter_path(config["adapter_dir"], config["project_id"], int(config["version"]))
    return out_dir.with_name(out_dir.name + ".partial")


def make_config(
    settings: Settings,
    *,
    project_id: str,
    version: int,
    train: list[dict[str, Any]],
    validation: list[dict[str, Any]],
    base_model: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The training config for one run, from settings; ``overrides`` replace any key (tests, benchmarks)."""
    config: dict[str, Any] = {
        "project_id": project_id,
        "version": version,
        "base_model": base_model or settings.training_base_model,
        "model_cache_dir": str(settings.model_cache_dir.resolve()),
        "adapter_dir": str(settings.adapter_dir.resolve()),
        "train": train,
        "validation": validation,
        "lora_r": settings.lora_r,
        "lora_alpha": settings.lora_alpha,
        "lora_dropout": settings.lora_dropout,
        "target_modules": [m.strip() for m in settings.lora_target_modules.split(",") if m.strip()],
        "epochs": settings.lora_epochs,
        "learning_rate": settings.lora_learning_rate,
        "batch_size": settings.lora_batch_size,
        "max_steps": settings.lora_max_steps,
        "micro_batch_size": settings.lora_micro_batch_size,
        "time_budget_s": settings.lora_time_budget_s,
        "precision": settings.lora_precision,
        "shared_prefix": settings.lora_shared_prefix,
        "seed": settings.training_seed,
        "max_seq_len": settings.llm_context_tokens,
        "device": "auto",
        "threads": None,
        "trainer_revision": TRAINER_REVISION,
    }
    config.update(overrides)
    return config


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _token_ids(encoded: Any) -> list[int]:
    """apply_chat_template returns a list or a BatchEncoding depending on the tokenizer and version."""
    if hasattr(encoded, "keys") and "input_ids" in encoded:
        encoded = encoded["input_ids"]
    return [int(t) for t in encoded]


def encode_example(
    tokenizer: Any, messages: list[dict[str, str]], max_len: int
) -> tuple[list[int], list[int]] | None:
    """(input_ids, labels) with labels masked outside the final assistant turn; None if it does not fit."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("a training example must end with the assistant's answer")
    prompt = _token_ids(
        tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True)
    )
    full = _token_ids(tokenizer.apply_chat_template(messages, tokenize=True))
    if full[: len(prompt)] != prompt:
        # A template that renders the prompt differently once an answer follows: fall back to concatenation.
        answer = _token_ids(
            tokenizer(messages[-1]["content"] + (tokenizer.eos_token or ""), add_special_tokens=False)
        )
        full = prompt + answer
    if len(full) > max_len or len(full) <= len(prompt):
        return None
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt) :]
    return full, labels


def _collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def supervised_tokens(example: tuple[list[int], list[int]]) -> int:
    """Answer tokens the loss counts in one encoded example (position t predicts token t+1)."""
    return sum(1 for label in example[1][1:] if label != IGNORE_INDEX)


def micro_batches(
    batch: list[tuple[list[int], list[int]]], size: int
) -> list[tuple[list[tuple[list[int], list[int]]], float]]:
    """The optimizer step's examples in groups of ``size``, each with the share of the step's answer tokens it
    holds: the shares weight the groups' mean losses so their gradients add up to the whole batch's."""
    total = sum(supervised_tokens(e) for e in batch) or 1
    groups = [batch[i : i + size] for i in range(0, len(batch), size)]
    return [(g, sum(supervised_tokens(e) for e in g) / total) for g in groups]


@dataclass(frozen=True)
class SharedPrefix:
    """The decoder's state after the prompt tokens every example of an optimizer step begins with."""

    cache: Any
    length: int


def _causal_and_body(model: Any) -> tuple[Any, Any]:
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    return causal, causal.get_decoder()


def answer_loss(model: Any, batch: dict[str, Any], prefix: SharedPrefix | None = None) -> tuple[Any, int]:
    """Mean cross-entropy over the supervised (answer) tokens, and how many there were.

    The same value as the causal-LM loss with labels, but the output layer runs only where a label is kept:
    with a vocabulary of 50-150k, logits for every prompt token were most of a CPU step's memory (GBs at a
    batch of 4) and a fifth of its compute, for positions the loss ignores anyway.

    With ``prefix``, ``batch`` holds what follows the step's shared prefix, and attends to its cached state.
    """
    import torch

    causal, body = _causal_and_body(model)
    mask = batch["attention_mask"]
    extra: dict[str, Any]
    if prefix is not None:
        rows = int(batch["input_ids"].shape[0])
        # The decoder appends the suffix's keys to the cache it is given: each micro-batch gets its own copy.
        cache = copy.deepcopy(prefix.cache)
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        mask = torch.cat([mask.new_ones((rows, prefix.length)), mask], dim=1)
        extra = {"past_key_values": cache, "use_cache": True}
    else:
        extra = {"use_cache": False}
    hidden = body(input_ids=batch["input_ids"], attention_mask=mask, **extra).last_hidden_state
    # Position t predicts token t+1.
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    logits = causal.get_output_embeddings()(hidden[:, :-1][keep])
    count = int(keep.sum())
    loss = torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="mean")
    return loss, count


#: Fewer shared tokens than this are not worth a pass of their own.
MIN_SHARED_PREFIX = 32


def shared_prefix_length(batch: list[tuple[list[int], list[int]]]) -> int:
    """How many leading tokens all of ``batch``'s examples have in common, stopping before the last prompt
    token of the shortest prompt (that position predicts the first answer token, so it must run with gradients).

    A project's training prompts are its serving prompts: instructions, schema and sample values first, the
    same bytes for every question. Computing that part once per step, instead of once per example, is most of a
    CPU step's work: about 770 of 1,100 tokens on the development split's prompts.
    """
    if not batch:
        return 0
    first_answer = min(
        next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
        for _, labels in batch
    )
    limit = max(0, first_answer - 1)
    reference = batch[0][0]
    length = 0
    while length < limit and all(len(ids) > length and ids[length] == reference[length] for ids, _ in batch):
        length += 1
    return length


def prefix_state(model: Any, ids: list[int], device: str) -> SharedPrefix:
    """The shared prefix run once through the current weights, without gradients.

    The answer's loss then reaches the adapter through every suffix token, but not back through the prefix's
    keys and values (a truncated gradient, like truncated backpropagation through time); the forward pass is
    exactly the full prompt's.
    """
    import torch

    _, body = _causal_and_body(model)
    with torch.no_grad():
        out = body(input_ids=torch.tensor([ids], device=device), use_cache=True)
    return SharedPrefix(cache=out.past_key_values, length=len(ids))


def step_prefix(
    model: Any, examples: list[tuple[list[int], list[int]]], device: str, dtype: Any = None
) -> SharedPrefix | None:
    """The shared prefix state of a step's examples, where there are several and they share enough."""
    length = shared_prefix_length(examples) if len(examples) > 1 else 0
    if length < MIN_SHARED_PREFIX:
        return None
    with _autocast(dtype, device):
        return prefix_state(model, examples[0][0][:length], device)


def _without_prefix(
    group: list[tuple[list[int], list[int]]], length: int
) -> list[tuple[list[int], list[int]]]:
    return [(ids[length:], labels[length:]) for ids, labels in group]


def _export_gguf(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The saved adapter also as a GGUF LoRA when the base is a GGUF file; metrics saying how it went.

    A failed conversion does not fail the run: the peft adapter is still served by the transformers backend.
    """

    cache_dir = Path(config["model_cache_dir"]) if config.get("model_cache_dir") else None
    try:
        source = resolve_base_model(config["base_model"], cache_dir)
        if source.gguf_file is None:
            return {"gguf_adapter": None}
        export_gguf_lora(folder, source.folder / source.gguf_file, folder / GGUF_LORA_FILE)
    except Exception as exc:
        log.warning("adapter not converted to a GGUF LoRA: %s", exc, exc_info=True)
        return {"gguf_adapter": None, "gguf_adapter_error": str(exc)[:500]}
    return {"gguf_adapter": GGUF_LORA_FILE}


def autocast_dtype(precision: str, device: str) -> Any:
    """The dtype forward passes autocast to (None: plain fp32). ``auto`` takes bf16 where the hardware does it
    natively: a GPU that supports it, or a CPU with bf16 instructions (``cpu_has_native_bf16``), the places it
    is both faster and safe without loss scaling; bf16 asked for elsewhere is honoured (slower on most CPUs, but
    it is what a user chose)."""
    import torch

    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        return None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device == "cpu" and cpu_has_native_bf16() else None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles), where torch's bf16 kernels beat
    fp32: a LoRA step of the 0.5B took 0.66x the time on 2 Zen 4 cores (bench/README.md). Without them bf16 is
    emulated and slower. torch says so only through private helpers, hence the guarded lookups."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _autocast(dtype: Any, device: str) -> contextlib.AbstractContextManager[Any]:
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _eval_loss(
    model: Any,
    encoded: list[tuple[list[int], list[int]]],
    batch_size: int,
    pad_id: int,
    device: str,
    dtype: Any = None,
    shared: bool = True,
) -> float | None:
    import torch

    if not encoded:
        return None
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            examples = encoded[start : start + batch_size]
            prefix = step_prefix(model, examples, device, dtype) if shared else None
            rows = _without_prefix(examples, prefix.length) if prefix else examples
            batch = {k: v.to(device) for k, v in _collate(rows, pad_id).items()}
            with _autocast(dtype, device):
                loss, n = answer_loss(model, batch, prefix)
            total += float(loss) * n
            tokens += n
    model.train()
    return total / max(tokens, 1)


def train_lora(config: dict[str, Any], progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Train one adapter; returns its metrics with ``adapter_path`` and ``checksum`` (sha256 of the weights)."""
    import torch
    from peft import LoraConfig, get_peft_model

    started = time.perf_counter()
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    _seed_everything(int(config["seed"]))
    device = pick_device(config.get("device", "auto"))
    report = progress or (lambda _event: None)
    report({"stage": "loading", "progress": 0.0})

    model, tokenizer = load_base_model(
        config["base_model"],
        cache_dir=Path(config["model_cache_dir"]) if config.get("model_cache_dir") else None,
        device=device,
    )
    max_len = int(config.get("max_seq_len") or 2048)
    train = [e for e in (encode_example(tokenizer, r["messages"], max_len) for r in config["train"]) if e]
    validation = [
        e for e in (encode_example(tokenizer, r["messages"], max_len) for r in config["validation"]) if e
    ]
    skipped = len(config["train"]) + len(config["validation"]) - len(train) - len(validation)
    if not train:
        raise ValueError("no training example fits the model's context")

    lora = LoraConfig(
        r=int(config["lora_r"]),
        lora_alpha=int(config["lora_alpha"]),
        lora_dropout=float(config["lora_dropout"]),
        target_modules=list(config["target_modules"]),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=float(config["learning_rate"]), weight_decay=0.0)

    batch_size = int(config["batch_size"])
    batches_per_epoch = math.ceil(len(train) / batch_size)
    max_steps = int(config.get("max_steps") or -1)
    total_steps = (
        max_steps if max_steps > 0 else max(1, math.ceil(float(config["epochs"]) * batches_per_epoch))
    )
    budget = StepBudget(
        budget_s=float(config.get("time_budget_s") or 0.0),
        planned_steps=total_steps,
        eval_batches=math.ceil(len(validation) / batch_size),
    )
    # Linear decay to zero over the planned steps: small adapters on few examples overfit less when the last
    # steps are gentle. A time budget that stops the run earlier does not move the decay's end: a CPU's run
    # stops within its first epoch, still learning, and ending the decay at the budget's last step (tried,
    # 2026-12-06) gave an adapter that lost 4 of the dev split's questions and gained none.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total_steps))

    out_dir = adapter_path(config["adapter_dir"], config["project_id"], int(config["version"]))
    partial = partial_path(config)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        return _run(
            config,
            model,
            tokenizer,
            optimizer,
            scheduler,
            trainable,
            train,
            validation,
            skipped,
            total_steps,
            batches_per_epoch,
            device,
            partial,
            out_dir,
            started,
            budget,
            report,
        )
    except BaseException:
        # Cancelled (KeyboardInterrupt from ray.cancel) or failed: leave nothing half-written behind.
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _run(
    config: dict[str, Any],
    model: Any,
    tokenizer: Any,
    optimizer: Any,
    scheduler: Any,
    trainable: list[Any],
    train: list[tuple[list[int], list[int]]],
    validation: list[tuple[list[int], list[int]]],
    skipped: int,
    total_steps: int,
    batches_per_epoch: int,
    device: str,
    partial: Path,
    out_dir: Path,
    started: float,
    budget: StepBudget,
    report: ProgressCallback,
) -> dict[str, Any]:
    import torch

    batch_size = int(config["batch_size"])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order_rng = random.Random(int(config["seed"]))
    dtype = autocast_dtype(str(config.get("precision") or "auto"), device)
    # Activations grow with the square of a prompt's length (attention), times the examples run together: on a
    # CPU serving-like prompts of 1-2k tokens, four at a time, took over 20 GB. One example at a time there
    # (gradients accumulated to the same step) keeps a step's memory to one prompt's; a GPU runs them together.
    micro = int(config.get("micro_batch_size") or 0) or (batch_size if device.startswith("cuda") else 1)

    shared = bool(config.get("shared_prefix", True))
    shared_tokens = 0  # prompt tokens the shared prefix pass saved running again
    losses: list[float] = []
    step = 0
    progress = 0.0
    stopped = "steps"
    train_started = time.perf_counter()
    report({"stage": "training", "progress": 0.0, "step": 0, "total_steps": total_steps})
    while step < total_steps and stopped == "steps":
        order = list(range(len(train)))
        order_rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            if step >= total_steps:
                break
            step_loss = 0.0
            step_started = time.perf_counter()
            examples = [train[i] for i in order[start : start + batch_size]]
            prefix = step_prefix(model, examples, device, dtype) if shared else None
            if prefix is not None:
                shared_tokens += prefix.length * (len(examples) - 1)
            for group, share in micro_batches(examples, micro):
                if share == 0:
                    continue
                rows = _without_prefix(group, prefix.length) if prefix else group
                batch = {k: v.to(device) for k, v in _collate(rows, pad_id).items()}
                with _autocast(dtype, device):
                    loss, _ = answer_loss(model, batch, prefix)
                (loss * share).backward()
                step_loss += float(loss.detach()) * share
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            step += 1
            budget.record(time.perf_counter() - step_started)
            budget.horizon = budget.steps_that_fit(step, time.perf_counter() - started)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            # Under a time budget the job ends at the budget's stop, not at the planned step: progress is measured
            # against that stop (never going back when the estimate grows), the plan stays in total_steps.
            progress = max(progress, step / budget.horizon)
            event = {
                "stage": "training",
                "progress": progress,
                "step": step,
                "total_steps": total_steps,
                "expected_steps": budget.horizon,
                "loss": losses[-1],
            }
            (partial / "progress.json").write_text(json.dumps(event))
            report(event)
            if budget.horizon <= step < total_steps:
                stopped = "time_budget"  # a CPU's cap: what was learnt so far is evaluated and kept
                break
    train_seconds = time.perf_counter() - train_started

    report({"stage": "evaluating", "progress": 1.0, "step": step, "total_steps": total_steps})
    eval_loss = _eval_loss(model, validation, batch_size, pad_id, device, dtype, shared)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    checksum = sha256_file(partial / ADAPTER_WEIGHTS)
    gguf = _export_gguf(config, partial)
    tail = losses[-max(1, min(len(losses), batches_per_epoch)) :]
    metrics: dict[str, Any] = {
        "project_id": config["project_id"],
        "version": int(config["version"]),
        "base_model": config["base_model"],
        "train_loss": sum(tail) / len(tail),
        "first_loss": losses[0],
        "eval_loss": eval_loss,
        # The whole curve, one loss per optimizer step: what a reader needs to judge whether more steps pay.
        "losses": [round(x, 4) for x in losses],
        "steps": step,
        "planned_steps": total_steps,
        "time_budget_s": budget.budget_s,
        "stopped": stopped,
        "precision": "bf16" if dtype is not None else "fp32",
        "micro_batch_size": micro,
        "shared_prefix": shared,
        "shared_prefix_tokens_saved": shared_tokens,
        "epochs": step * batch_size / len(train),
        "train_examples": len(train),
        "validation_examples": len(validation),
        "skipped_examples": skipped,
        "seconds": time.perf_counter() - started,
        # Load, training and what follows it (held-out loss, saving, GGUF): where a time budget's seconds went.
        "load_seconds": train_started - started,
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / max(step, 1),
        "device": device,
        "lora_r": int(config["lora_r"]),
        "lora_alpha": int(config["lora_alpha"]),
        "target_modules": list(config["target_modules"]),
        "checksum": checksum,
        **gguf,
    }
    (partial / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (partial / "progress.json").unlink(missing_ok=True)
    if out_dir.exists():  # a retried run of the same version replaces its earlier output
        shutil.rmtree(out_dir)
    os.replace(partial, out_dir)
    report({"stage": "done", "progress": 1.0, "step": step, "total_steps": total_steps})
    return {**metrics, "adapter_path": str(out_dir)}


def read_progress(adapter_dir: Path | str, project_id: str, version: int) -> dict[str, Any] | None:
    """The last progress a run wrote (polling alternative to the callback, e.g. from another process)."""
    out_dir = adapter_path(adapter_dir, project_id, version)
    for candidate in (
        out_dir.with_name(out_dir.name + ".partial") / "progress.json",
        out_dir / "metrics.json",
    ):
        try:
            data: dict[str, Any] = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        return data if "stage" in data else {"stage": "done", "progress": 1.0, **data}
    return None
