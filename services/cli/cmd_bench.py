"""``querylift bench ...``: benchmarks. ``bench accuracy`` lives here; more bench commands plug in below.

To add one (e.g. ``bench pipeline``), either call :func:`register_bench_command` from an imported module or
list ``(module, function)`` in ``BENCH_COMMAND_MODULES``: ``function(bench_subparsers)`` adds its parser.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from bench.accuracy.data import BenchDataError
from bench.accuracy.merge import MergeError, merge_files
from bench.accuracy.report import print_table
from bench.accuracy.runner import AccuracyOptions, run_accuracy
from bench.accuracy.strategies import DEFAULT_STRATEGIES, STRATEGIES
from services.infra.logging_setup import setup_logging
from services.infra.settings import get_settings

Configure = Callable[[argparse.ArgumentParser], None]

#: (module, function) pairs; ``function(bench_subparsers)`` registers a command. Missing modules are skipped.
BENCH_COMMAND_MODULES: tuple[tuple[str, str], ...] = (("bench.pipeline.cli", "register_pipeline"),)

_COMMANDS: dict[str, tuple[str, Configure]] = {}


def register_bench_command(name: str, help: str, configure: Configure) -> None:
    """Add ``querylift bench NAME``; ``configure`` adds its arguments and sets ``func`` (args → exit code)."""
    _COMMANDS[name] = (help, configure)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="benchmarks (accuracy, ...)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    for name, (help_text, configure) in _COMMANDS.items():
        configure(bench_sub.add_parser(name, help=help_text))
    for module_name, function in BENCH_COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # not part of this build
            raise
        getattr(module, function)(bench_sub)


# --- bench accuracy --------------------------------------------------------------------------------------


def _configure_accuracy(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Replay each project's history through the product, answer its test questions with each strategy "
        "and score execution accuracy."
    )
    p.add_argument(
        "--data", type=Path, required=True, help="benchmark folder (projects/<name>/...) or one project"
    )
    p.add_argument("--out", type=Path, required=True, help="results JSON")
    p.add_argument("--projects", nargs="+", default=None, help="only these projects")
    p.add_argument(
        "--strategies",
        nargs="+",
        default=list(DEFAULT_STRATEGIES),
        choices=list(STRATEGIES),
        help=f"default: {' '.join(DEFAULT_STRATEGIES)}",
    )
    p.add_argument(
        "--variant",
        dest="variants",
        action="append",
        default=None,
        metavar="BASE:SETTING=VALUE[,...]",
        help="also measure strategy BASE with settings changed (field names of the QUERYLIFT_ settings, e.g. "
        "product:repair_rounds=0); repeatable",
    )
    p.add_argument(
        "--interleave",
        action="store_true",
        help="answer each question with every strategy in turn (rotating the first), so a before/after "
        "comparison shares the machine's speed",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="test questions per project (N evenly spread over the test file)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="GGUF model: qwen2.5-coder-0.5b-instruct (default), qwen2.5-coder-1.5b-instruct, "
        "smollm2-135m-instruct or a .gguf path",
    )
    p.add_argument(
        "--learning-curve", action="store_true", help="also answer after 0/10/25/50/100 %% of history"
    )
    p.add_argument("--plot", type=Path, default=None, help="learning-curve PNG (default: next to --out)")
    p.add_argument("--work-dir", type=Path, default=None, help="embedded PostgreSQL and adapter cache")
    p.add_argument(
        "--lora-base-model",
        default=None,
        help="base model LoRA adapters are trained on (default: the answering model)",
    )
    p.add_argument("--lora-max-steps", type=int, default=None, help="cap LoRA optimizer steps (CPU runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_accuracy)


def _run_accuracy(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    setup_logging("WARNING", json_lines=False)
    options = AccuracyOptions(
        data=args.data,
        out=args.out,
        projects=args.projects,
        strategies=args.strategies,
        variants=args.variants,
        interleave=args.interleave,
        limit=args.limit,
        model=args.model,
        learning_curve=args.learning_curve,
        plot=args.plot,
        work_dir=args.work_dir,
        lora_base_model=args.lora_base_model,
        lora_max_steps=args.lora_max_steps,
        progress=not args.no_progress,
        command=shlex.join(["querylift", *sys.argv[1:]]),
    )
    try:
        document = asyncio.run(run_accuracy(options, get_settings()))
    except BenchDataError as exc:
        print(f"querylift bench accuracy: {exc}", file=sys.stderr)
        return 2
    print_table(document)
    print(f"results: {args.out}")
    if document["meta"].get("plot"):
        print(f"learning curve: {document['meta']['plot']}")
    return 0


register_bench_command("accuracy", "execution accuracy per project and strategy", _configure_accuracy)


def _configure_merge(p: argparse.ArgumentParser) -> None:
    p.description = "Merge results of several accuracy runs on the same data (e.g. LoRA measured apart)."
    p.add_argument("inputs", type=Path, nargs="+", help="results JSON files, in order")
    p.add_argument("--out", type=Path, required=True, help="merged results JSON")
    p.set_defaults(func=_run_merge)


def _run_merge(args: argparse.Namespace) -> int:
    try:
        document = merge_files(args.inputs, args.out)
    except (MergeError, OSError, ValueError) as exc:
        print(f"querylift bench accuracy-merge: {exc}", file=sys.stderr)
        return 2
    print_table(document)
    print(f"results: {args.out}")
    return 0


register_bench_command("accuracy-merge", "merge accuracy results of several runs", _configure_merge)
