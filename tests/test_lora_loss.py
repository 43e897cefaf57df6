"""The training loss computed on answer positions only equals the causal-LM loss over the same labels."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from services.training.lora_train import IGNORE_INDEX, _collate, answer_loss  # noqa: E402


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_answer_loss_matches_the_full_causal_lm_loss(architecture: str) -> None:
    torch.manual_seed(0)
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
    model = peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
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
