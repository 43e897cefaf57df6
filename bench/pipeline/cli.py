"""The ``querylift bench pipeline`` subcommand (plugged into ``services.cli.cmd_bench``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.pipeline.report import print_report
from bench.pipeline.runner import PipelineOptions, run_pipeline_benchmark
from services.infra import event_loop
from services.infra.logging_setup import setup_logging
from services.infra.settings import Settings


def register_pipeline(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bench_sub.add_parser(
        "pipeline",
        help="throughput and latency the five consumers add over a scripted model",
        description=(
            "Drive questions at a steady rate through the five real consumer processes (K per consumer group) "
            "on the embedded broker and PostgreSQL, with a scripted model of fixed latency, against the sample "
            "project registered as several tenants. Prints tables and writes JSON."
        ),
    )
    p.add_argument("--questions", type=int, default=2000, help="questions measured (after the warm-up)")
    p.add_argument("--rate", type=float, default=200.0, help="questions per second offered")
    p.add_argument("--out", type=Path, default=Path("pipeline.json"), help="results JSON")
    p.add_argument("--consumers", type=int, default=1, help="processes per consumer (one group each)")
    p.add_argument("--model-latency-ms", type=float, default=50.0, help="scripted model latency per call")
    p.add_argument("--projects", type=int, default=12, help="tenants the questions are spread over")
    p.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    p.add_argument("--warmup", type=int, default=40, help="questions answered before measuring")
    p.add_argument("--work-dir", type=Path, default=None, help="keep broker/PostgreSQL data and logs here")
    p.add_argument(
        "--distinct-questions",
        action="store_true",
        help="make every question text unique, so no embedding comes from the retrieval cache",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    setup_logging("WARNING", json_lines=False)
    options = PipelineOptions(
        questions=args.questions,
        rate=args.rate,
        out=args.out,
        consumers=args.consumers,
        model_latency_ms=args.model_latency_ms,
        projects=args.projects,
        partitions=args.partitions,
        warmup=args.warmup,
        work_dir=args.work_dir,
        distinct_questions=args.distinct_questions,
        command=shlex.join(["querylift", *sys.argv[1:]]),
    )
    # The load generator shares the cores with what it measures: it runs on the consumers' event loop too.
    document = event_loop.run(run_pipeline_benchmark(options), Settings().event_loop)
    print_report(document)
    print(f"results: {args.out}")
    return 0
