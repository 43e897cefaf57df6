"""The pipeline benchmark's results as rich tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _ms(value: Any) -> str:
    return "–" if value is None else f"{value:.1f}"


def print_report(document: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    meta, res = document["meta"], document["results"]
    console.print(
        f"[bold]pipeline benchmark[/] — {meta['model']} at {meta['model_latency_ms']:.0f} ms, "
        f"{meta['consumers_per_service']} process(es) per consumer, {meta['projects']} projects, "
        f"{meta['machine']['cpus']} CPUs"
    )
    console.print(
        f"questions {res['questions']}: answered {res['answered']}, errors {res['errors']}, "
        f"unanswered {res['unanswered']}; offered {res['offered_rate']:.0f}/s, "
        f"[bold]throughput {res['throughput_qps']:.1f} questions/s[/]"
    )
    lat = Table(title="latency (ms)")
    for col in ("measure", "p50", "p95", "p99", "max"):
        lat.add_column(col, justify="right" if col != "measure" else "left")
    for name, p in res["latency_ms"].items():
        lat.add_row(name.replace("_", " "), _ms(p["p50"]), _ms(p["p95"]), _ms(p["p99"]), _ms(p["max"]))
    console.print(lat)
    procs = Table(title="processes (during the measured run)")
    for col in ("process", "CPU %", "CPU s", "RSS start MB", "RSS max MB", "RSS end MB"):
        procs.add_column(col, justify="right" if col != "process" else "left")
    for p in document["processes"]:
        procs.add_row(
            p["name"],
            _ms(p["cpu_percent"]),
            _ms(p["cpu_seconds"]),
            _ms(p["rss_mb_start"]),
            _ms(p["rss_mb_max"]),
            _ms(p["rss_mb_end"]),
        )
    console.print(procs)
    lag = Table(title="consumer lag (messages not committed)")
    for col in ("consumer", "max", "final"):
        lag.add_column(col, justify="right" if col != "consumer" else "left")
    for name, v in document["consumer_lag"]["by_consumer"].items():
        lag.add_row(name, str(v["max"]), str(v["final"]))
    console.print(lag)
