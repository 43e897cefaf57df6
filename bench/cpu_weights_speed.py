"""Prompt evaluation and decoding speed of the local model's weight formats, interleaved on the same tokens.

    python -m bench.cpu_weights_speed --model qwen2.5-coder-0.5b-instruct --rounds 2 \
        --out bench/results/cpu_weights_speed_0.5b.json

For each build (the weights as shipped, loaded plainly or repacked; each QUERYLIFT_LLM_CPU_WEIGHTS kind,
repacked as the product loads it; the shipped weights with flash attention; ``--builds`` picks some) a fresh model evaluates the same token counts as a median one-call answer
of the product: a project prefix (772 tokens), the question's own part (325) and 40 decoded tokens, one token
at a time as greedy decoding does. Builds take turns, round by round, so the host's changing speed falls on
all of them alike; the medians over rounds are reported. Speed only: whether a format keeps the answers is
the accuracy benchmark's question (``--variant product:llm_cpu_weights=...``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from services.infra.llm.cpu_weights import CpuWeights, cpu_weights_file
from services.infra.llm.gguf import _model_params_without_extra_buffers
from services.infra.llm.model_files import resolve_gguf
from services.infra.llm.repack_probe import repacking_works
from services.infra.settings import Settings

PREFIX, VARYING, DECODED = 772, 325, 40


@dataclass(frozen=True)
class Build:
    name: str
    weights: CpuWeights
    repacked: bool
    flash_attn: bool = False


@dataclass
class Timing:
    prefix_tok_s: float
    varying_tok_s: float
    decode_tok_s: float


BUILDS = [
    Build("shipped", "shipped", False),
    Build("shipped, repacked", "shipped", True),
    Build("q4_0, repacked", "q4_0", True),
    Build("iq4_nl, repacked", "iq4_nl", True),
    # llama.cpp's fused attention kernel: measured, no product setting (it slows decoding on this CPU).
    Build("shipped, flash attention", "shipped", False, flash_attn=True),
]


def _text_tokens(model: Any, n: int) -> list[int]:
    # Any text times the same; the repository's README is long enough and always there.
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    tokens: list[int] = model.tokenize(text.encode(), add_bos=False)
    if len(tokens) < n:
        raise SystemExit(f"README.md has {len(tokens)} tokens, {n} needed")
    return tokens[:n]


def time_build(path: Path, build: Build, threads: int) -> Timing:
    from llama_cpp import Llama

    params = contextlib.nullcontext() if build.repacked else _model_params_without_extra_buffers()
    with params:
        model = Llama(
            model_path=str(path),
            n_ctx=2048,
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=build.flash_attn,
            verbose=False,
        )
    try:
        tokens = _text_tokens(model, PREFIX + VARYING + DECODED)
        started = time.perf_counter()
        model.eval(tokens[:PREFIX])
        prefix_s = time.perf_counter() - started
        started = time.perf_counter()
        model.eval(tokens[PREFIX : PREFIX + VARYING])
        varying_s = time.perf_counter() - started
        started = time.perf_counter()
        for token in tokens[PREFIX + VARYING :]:
            model.eval([token])
        decode_s = time.perf_counter() - started
    finally:
        model.close()
    return Timing(PREFIX / prefix_s, VARYING / varying_s, DECODED / decode_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/cpu_weights_speed.json"))
    parser.add_argument(
        "--builds", nargs="+", default=None, metavar="NAME", help="only these builds (names as in the table)"
    )
    args = parser.parse_args(argv)
    builds = [b for b in BUILDS if args.builds is None or b.name in args.builds]
    if not builds:
        raise SystemExit(f"no such build; builds: {', '.join(b.name for b in BUILDS)}")

    settings = Settings()
    source = resolve_gguf(args.model, settings.model_cache_dir)
    files = {
        b.name: cpu_weights_file(source, b.weights, settings.model_cache_dir, args.threads) for b in builds
    }
    # A repacked load that crashes this CPU's llama.cpp (repack_probe) would end the run: such builds are left out.
    crashing = [
        b.name
        for b in builds
        if b.repacked and not repacking_works(files[b.name], args.threads, settings.model_cache_dir)
    ]
    if crashing:
        print(f"left out, llama.cpp cannot serve them repacked on this CPU: {', '.join(crashing)}")
        builds = [b for b in builds if b.name not in crashing]
    runs: dict[str, list[Timing]] = {b.name: [] for b in builds}
    for _ in range(args.rounds):
        for build in builds:
            runs[build.name].append(time_build(files[build.name], build, args.threads))

    def median(name: str, field: str) -> float:
        return statistics.median(getattr(t, field) for t in runs[name])

    table = Table(title=f"Tokens per second · {args.model} · {args.threads} threads · {args.rounds} rounds")
    for column in ("build", "file MiB", "prefix tok/s", "question part tok/s", "decode tok/s"):
        table.add_column(column, justify="left" if column == "build" else "right")
    for build in builds:
        table.add_row(
            build.name,
            f"{files[build.name].stat().st_size / 2**20:.0f}",
            f"{median(build.name, 'prefix_tok_s'):.0f}",
            f"{median(build.name, 'varying_tok_s'):.0f}",
            f"{median(build.name, 'decode_tok_s'):.1f}",
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "model": args.model,
        "threads": args.threads,
        "tokens": {"prefix": PREFIX, "question_part": VARYING, "decoded": DECODED},
        "builds": {
            b.name: {
                "weights": b.weights,
                "repacked": b.repacked,
                "flash_attn": b.flash_attn,
                "file_bytes": files[b.name].stat().st_size,
                "rounds": [asdict(t) for t in runs[b.name]],
            }
            for b in builds
        },
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
