"""The local model requantized for llama.cpp's repacked CPU kernels (QUERYLIFT_LLM_CPU_WEIGHTS).

Real llama.cpp throughout, on SmolLM2-135M (the packaged Q4_1 GGUF): the requantized file is made once and
holds the format asked for, a broken source leaves nothing behind, and the backend serving the repacked
weights answers deterministically and checks prompt-lookup drafts in batches (the path once seen to crash
with repacked weights).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.core.llm.base import ChatMessage
from services.infra.llm.cpu_weights import (
    CpuWeights,
    RequantizeError,
    cpu_weights_file,
    requantized_path,
)
from services.infra.llm.gguf import GGUFLLM
from services.infra.llm.model_files import SMOLLM2, resolve_gguf
from services.infra.llm.repack_probe import repacking_works, verdict_path
from services.infra.settings import Settings

pytestmark = [pytest.mark.real_model]

# (kind, then the type of a layer's feed-forward up projection, feed-forward down projection and attention
# query that the requantized file must hold); the source holds Q4_1 throughout.
KINDS: list[tuple[CpuWeights, str, str, str]] = [
    ("q4_0", "Q4_0", "Q4_0", "Q4_0"),
    ("iq4_nl", "IQ4_NL", "Q5_K", "IQ4_NL"),  # llama.cpp's own choice keeps ffn_down at 5 bits
]
TENSORS = ("blk.0.ffn_up.weight", "blk.0.ffn_down.weight", "blk.0.attn_q.weight")

CHAT: list[ChatMessage] = [
    {"role": "system", "content": "Answer with one SQL query. Tables: employees(name, dept, salary)."},
    {"role": "user", "content": "how many employees work in sales"},
]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return resolve_gguf(SMOLLM2.name, Path("unused"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cpu-weights")


def _tensor_types(path: Path) -> dict[str, str]:
    from gguf import GGUFReader

    return {tensor.name: tensor.tensor_type.name for tensor in GGUFReader(path).tensors}


@pytest.mark.parametrize(("kind", "ffn_up", "ffn_down", "attn_q"), KINDS)
def test_the_requantized_file_holds_the_format_and_is_made_once(
    smollm2: Path, cache_dir: Path, kind: CpuWeights, ffn_up: str, ffn_down: str, attn_q: str
) -> None:
    made = cpu_weights_file(smollm2, kind, cache_dir)
    assert made == requantized_path(smollm2, kind, cache_dir) and made.parent == cache_dir
    types = _tensor_types(made)
    assert tuple(types[name] for name in TENSORS) == (ffn_up, ffn_down, attn_q)
    assert {_tensor_types(smollm2)[name] for name in TENSORS} == {"Q4_1"}
    written = made.stat().st_mtime_ns
    assert cpu_weights_file(smollm2, kind, cache_dir) == made
    assert made.stat().st_mtime_ns == written  # not written again
    assert not list(cache_dir.glob(".*.tmp"))


def test_shipped_weights_are_the_source_file(smollm2: Path, cache_dir: Path) -> None:
    assert cpu_weights_file(smollm2, "shipped", cache_dir) == smollm2


def test_a_replaced_source_is_requantized_again(smollm2: Path, tmp_path: Path) -> None:
    source = tmp_path / "model.gguf"
    shutil.copyfile(smollm2, source)
    first = requantized_path(source, "q4_0", tmp_path)
    with source.open("ab") as f:
        f.write(b"\0" * 32)  # another file at the same path
    assert requantized_path(source, "q4_0", tmp_path) != first


def test_a_broken_source_raises_and_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "broken.gguf"
    source.write_bytes(b"GGUF but not really" * 100)
    cache = tmp_path / "cache"
    with pytest.raises(RequantizeError, match="could not requantize"):
        cpu_weights_file(source, "q4_0", cache)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("kind", [kind for kind, *_ in KINDS])
async def test_repacked_weights_answer_deterministically_and_check_drafts_in_batches(
    tmp_path: Path, kind: CpuWeights
) -> None:
    def backend(lookup_tokens: int) -> GGUFLLM:
        settings = Settings(
            data_dir=tmp_path,
            llm_model=SMOLLM2.name,
            llm_cpu_weights=kind,
            llm_context_tokens=1024,
            llm_lookup_tokens=lookup_tokens,
            # The drafts are checked from the reply's first token on: the opening fence they copy from the
            # prompt is where a 135M model on 4-bit weights surely agrees with them.
            llm_reply_fence=lookup_tokens == 0,
            log_json=False,
        )
        return GGUFLLM(settings)

    plain, drafted = backend(0), backend(8)
    assert plain.served_path == requantized_path(plain.path, kind, plain.settings.model_cache_dir)
    # Repacked where this CPU's llama.cpp serves them so (a host with AMX was seen to crash): either way the
    # backend answers, in this process.
    assert plain.repacked is repacking_works(
        plain.served_path, plain.settings.llm_threads, plain.settings.model_cache_dir
    )
    cold = await plain.complete(CHAT, max_tokens=48, alternatives=2)
    warm = await plain.complete(CHAT, max_tokens=48)
    assert cold.text and cold.text == warm.text  # the same answer with the project's prefix cached
    assert len(cold.alternatives) == 2
    # Batched draft checks on repacked weights (a batch's logits may differ from one token's in the last
    # bits, so the text is not compared): they run, and some drafts are accepted.
    checked = await drafted.complete(CHAT, max_tokens=48)
    assert checked.text and checked.timings["drafted_tokens"] > 0 and checked.timings["accepted_tokens"] > 0


def test_a_file_this_cpu_cannot_serve_repacked_is_found_out_in_a_child_and_remembered(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF but not really" * 100)
    cache = tmp_path / "cache"
    repacking_works.cache_clear()
    assert repacking_works(broken, 2, cache) is False  # the child failed; this process goes on
    assert list(cache.iterdir()) == [verdict_path(broken, cache, "fails")]
    assert list(tmp_path.glob("broken.gguf.*")) == []  # nothing written next to the model
    # A verdict is per file and CPU, and read back rather than tried again.
    verdict_path(broken, cache, "fails").rename(verdict_path(broken, cache, "ok"))
    repacking_works.cache_clear()
    assert repacking_works(broken, 2, cache) is True


async def test_weights_this_cpu_cannot_serve_repacked_are_served_plainly(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        llm_model=SMOLLM2.name,
        llm_cpu_weights="q4_0",
        llm_context_tokens=1024,
        log_json=False,
    )
    backend = GGUFLLM(settings)
    # As if the child had crashed on this file.
    settings.model_cache_dir.mkdir(parents=True, exist_ok=True)
    verdict_path(backend.served_path, settings.model_cache_dir, "fails").touch()
    repacking_works.cache_clear()
    assert backend.repacked is False
    answer = await backend.complete(CHAT, max_tokens=24)
    assert answer.text
