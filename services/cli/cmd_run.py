"""``querylift run SERVICE``: one consumer against configured Kafka, PostgreSQL and Ray (a cluster deployment)."""

from __future__ import annotations

import argparse

from services.consumer_process import run_consumer
from services.infra import event_loop
from services.infra.logging_setup import setup_logging
from services.infra.parent_watch import watch_parent
from services.infra.settings import get_settings
from services.wiring import SERVICES


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run one consumer (query, retrieval, generation, feedback, training)")
    p.add_argument("service", choices=SERVICES)
    p.add_argument("--metrics-port", type=int, default=None, help="overrides QUERYLIFT_METRICS_PORT")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settings = get_settings()
    setup_logging(settings.log_level, settings.log_json)
    if settings.parent_pid is not None:
        watch_parent(settings.parent_pid)
    event_loop.run(run_consumer(args.service, settings, metrics_port=args.metrics_port), settings.event_loop)
    return 0
