"""The training loss computed on answer positions only equals the causal-LM loss over the same labels, and
equals it again when the prompt tokens a step's examples share are run once, as a cached prefix."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from services.training.lora_train import (  # noqa: E402
    IGNORE_INDEX,
    MIN_SHARED_PREFIX,
    _collate,
    answer_loss,
    shared_prefix_length,
    step_prefix,
)


def _tiny_lora_model(architecture: str = "qwen2") -> Any:  # a peft model (peft comes from importorskip)
    config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[architecture]
    config = config_class(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = transformers.AutoModelForCausalLM.from_config(config)
    return peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_answer_loss_matches_the_full_causal_lm_loss(architecture: str) -> None:
    torch.manual_seed(0)
    model = _tiny_lora_model(architecture)
    # Prompts of different lengths (padding) with a few supervised answer tokens at the end of each.
    examples = []
    for length, answer in ((12, 3), (9, 4), (15, 2)):
        ids = torch.randint(1, 97, (length,)).tolist()
        labels = [IGNORE_INDEX] * (length - answer) + ids[length - answer :]
        examples.append((ids, labels))
    batch = _collate(examples, pad_id=0)

    full = model(**batch).loss
    partial, count = answer_loss(model, batch)
    assert count == 3 + 4 + 2  # every answer token is predicted from the position before it
    assert torch.allclose(full, partial, atol=1e-5), (float(full), float(partial))

    full.backward()
    grads_full = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    partial.backward()
    grads_partial = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads_full, grads_partial, strict=True))


@pytest.mark.parametrize(
    ("examples", "expected"),
    [
        # (input_ids, labels): prompt tokens carry IGNORE_INDEX, answer tokens their own id.
        ([([1, 2, 3, 4, 9], [-100, -100, -100, -100, 9]), ([1, 2, 3, 5, 8], [-100, -100, -100, -100, 8])], 3),
        # Stops before the last prompt token of the shortest prompt, which predicts the first answer token.
        ([([1, 2, 3, 9], [-100, -100, -100, 9]), ([1, 2, 3, 4, 8], [-100, -100, -100, -100, 8])], 2),
        ([([7, 2, 3, 9], [-100, -100, -100, 9]), ([1, 2, 3, 8], [-100, -100, -100, 8])], 0),
        ([([1, 2, 3, 9], [-100, -100, -100, 9])], 2),
        ([], 0),
    ],
)
def test_shared_prefix_length(examples: list[tuple[list[int], list[int]]], expected: int) -> None:
    assert shared_prefix_length(examples) == expected


def test_a_shared_prefix_run_once_gives_the_same_loss_as_whole_prompts() -> None:
    torch.manual_seed(1)
    model = _tiny_lora_model()
    model.eval()  # no dropout: the two passes must see the same weights
    prefix = torch.randint(1, 97, (MIN_SHARED_PREFIX + 8,)).tolist()
    examples = []
    for length, answer in ((12, 3), (9, 4), (15, 2)):
        ids = prefix + torch.randint(1, 97, (length,)).tolist()
        labels = [IGNORE_INDEX] * (len(ids) - answer) + ids[len(ids) - answer :]
        examples.append((ids, labels))

    whole, count = answer_loss(model, _collate(examples, pad_id=0))
    state = step_prefix(model, examples, "cpu")
    assert state is not None and state.length == len(prefix)
    suffixes = [(ids[state.length :], labels[state.length :]) for ids, labels in examples]
    # All three rows at once (the cache repeated per row, right padding) and one row at a time.
    together, together_count = answer_loss(model, _collate(suffixes, pad_id=0), state)
    one_by_one = [answer_loss(model, _collate([row], pad_id=0), state) for row in suffixes]
    assert together_count == count == 3 + 4 + 2
    assert torch.allclose(whole, together, atol=1e-5), (float(whole), float(together))
    weighted = sum(float(loss.detach()) * n for loss, n in one_by_one) / count
    assert abs(float(whole) - weighted) < 1e-5

    # The loss still reaches the adapter through the suffix tokens, and the cached prefix was not extended.
    together.backward()
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters() if p.requires_grad)
    assert state.cache.get_seq_length() == len(prefix)


def test_examples_without_a_shared_prefix_run_whole() -> None:
    model = _tiny_lora_model()
    examples = [
        ([1] * 40 + [5, 6], [IGNORE_INDEX] * 41 + [6]),
        ([2] * 40 + [5, 6], [IGNORE_INDEX] * 41 + [6]),
    ]
    assert step_prefix(model, examples, "cpu") is None
    assert step_prefix(model, examples[:1], "cpu") is None  # one example: nothing to share
