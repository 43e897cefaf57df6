"""GGUF model files: packaged SmolLM2, Qwen assembled from its part packages, paths and unknown names."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from services.infra.llm.model_files import (
    QWEN_CODER,
    ModelFileError,
    SplitModel,
    assemble_split_model,
    resolve_gguf,
)

GGUF_MAGIC = b"GGUF"


def test_smollm2_resolves_to_the_packaged_gguf(tmp_path: Path) -> None:
    path = resolve_gguf("smollm2-135m-instruct", tmp_path)
    assert path.is_file() and path.suffix == ".gguf"
    assert path.read_bytes()[:4] == GGUF_MAGIC
    assert not any(tmp_path.iterdir())  # nothing copied


def test_path_is_returned_as_is(tmp_path: Path) -> None:
    model = tmp_path / "my.gguf"
    model.write_bytes(GGUF_MAGIC + b"\0" * 8)
    assert resolve_gguf(str(model), tmp_path / "cache") == model
    with pytest.raises(ModelFileError, match="not found"):
        resolve_gguf(str(tmp_path / "missing.gguf"), tmp_path)


def test_unknown_name_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"Unknown model 'llama-70b'.*qwen2.5-coder-0.5b-instruct"):
        resolve_gguf("llama-70b", tmp_path)


def small_split_model(sha256: str, size: int) -> SplitModel:
    # The real part packages, but only the first two parts: exercises lookup, concat and verification quickly.
    return SplitModel(
        name="qwen-first-two-parts",
        filename="two.bin",
        distribution=QWEN_CODER.distribution,
        module=QWEN_CODER.module,
        version=QWEN_CODER.version,
        parts=2,
        size=size,
        sha256=sha256,
    )


def _parts_digest(n: int) -> tuple[str, int]:
    import importlib.util

    digest, size = hashlib.sha256(), 0
    for i in range(1, n + 1):
        spec = importlib.util.find_spec(QWEN_CODER.part_module(i))
        assert spec is not None and spec.submodule_search_locations
        data = (Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{i:02d}.bin").read_bytes()
        digest.update(data)
        size += len(data)
    return digest.hexdigest(), size


def test_assembly_rejects_a_wrong_checksum_and_leaves_nothing(tmp_path: Path) -> None:
    _, size = _parts_digest(2)
    with pytest.raises(ModelFileError, match="sha256"):
        assemble_split_model(small_split_model("0" * 64, size), tmp_path, install=False)
    assert list(tmp_path.iterdir()) == []


def test_assembly_rejects_a_wrong_size(tmp_path: Path) -> None:
    sha, size = _parts_digest(2)
    with pytest.raises(ModelFileError, match="bytes, expected"):
        assemble_split_model(small_split_model(sha, size + 1), tmp_path, install=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_parts_are_named_when_install_is_off(tmp_path: Path) -> None:
    missing = SplitModel(
        "x", "x.gguf", "querylift-absent-part{n}", "querylift_absent_part{n}", "1.0", 2, 1, "0" * 64
    )
    with pytest.raises(ModelFileError, match="querylift-absent-part1, querylift-absent-part2"):
        assemble_split_model(missing, tmp_path, install=False)


@pytest.mark.slow
def test_qwen_is_assembled_once_and_verified(tmp_path: Path) -> None:
    path = resolve_gguf("qwen2.5-coder-0.5b-instruct", tmp_path)
    assert path == tmp_path / QWEN_CODER.filename
    assert path.stat().st_size == QWEN_CODER.size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    assert digest.hexdigest() == QWEN_CODER.sha256
    with path.open("rb") as f:
        assert f.read(4) == GGUF_MAGIC
    mtime = path.stat().st_mtime_ns
    assert resolve_gguf("qwen2.5-coder-0.5b-instruct", tmp_path) == path
    assert path.stat().st_mtime_ns == mtime  # not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [QWEN_CODER.filename]  # no temporary files left
