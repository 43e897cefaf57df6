"""A bounded soak of the real pipeline: a steady question rate for a few minutes (loopback only), sampling each
consumer's RSS and every group's lag, to show that memory and lag stay flat.

    python -m bench.soak --seconds 180 --rate 10 --out soak.json

Writes the samples and a verdict: RSS growth per process between the first and last quarter of the run, and
lag at the end compared with its maximum.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.pipeline.probes import LagProbe, ProcessProbe, run_id
from bench.pipeline.runner import PipelineOptions, _drive, _questions, summarize
from bench.pipeline.stack import (
    SAMPLE_SQL,
    ConsumerFleet,
    Infrastructure,
    open_system_of_record,
    register_tenants,
)
from services.client import QueryliftClient
from services.infra.logging_setup import setup_logging
from services.wiring import SERVICES


async def soak(
    seconds: float, rate: float, every_s: float, model_latency_ms: float, projects: int
) -> dict[str, Any]:
    tag = run_id()
    work = Path(tempfile.mkdtemp(prefix="ql-soak-"))
    infra = Infrastructure(work).start()
    prefix = f"soak{tag}."
    fleet = ConsumerFleet(
        infra.bootstrap,
        infra.dsn,
        work / "logs",
        env_extra={
            "QUERYLIFT_LLM_BACKEND": "scripted",
            "QUERYLIFT_SCRIPTED_LATENCY_MS": str(model_latency_ms),
            "QUERYLIFT_SCRIPTED_SQL": SAMPLE_SQL,
            "QUERYLIFT_TOPIC_PREFIX": prefix,
            "QUERYLIFT_TRAINING_THRESHOLD": "1000000",
            "QUERYLIFT_DATA_DIR": str(work / "data"),
        },
    )
    client = QueryliftClient(infra.bootstrap, prefix=prefix)
    lag = LagProbe(infra.bootstrap, prefix)
    try:
        pool = await open_system_of_record(infra.dsn)
        try:
            tenants = await register_tenants(pool, work, projects)
        finally:
            await pool.close()
        await client.start()
        fleet.spawn_all(SERVICES)
        warm = await _drive(client, _questions(tenants, 20, f"warm{tag}"), 10.0, 300.0)
        if any(s.outcome is None for s in warm):
            raise RuntimeError(f"pipeline did not warm up; logs in {work / 'logs'}")
        await lag.start()
        probe = ProcessProbe({p.name: p.pid for p in fleet.processes})
        samples: list[dict[str, Any]] = []
        done = asyncio.Event()

        async def sampler() -> None:
            t0 = time.monotonic()
            while not done.is_set():
                probe.sample()
                row: dict[str, Any] = {"t_s": round(time.monotonic() - t0, 1)}
                row["rss_mb"] = {n: round(s.rss_mb[-1], 1) for n, s in probe.stats.items()}
                with contextlib.suppress(Exception):
                    row["lag"] = await lag.sample()
                samples.append(row)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), every_s)

        probe.begin()
        task = asyncio.create_task(sampler())
        sent = await _drive(client, _questions(tenants, int(seconds * rate), tag), rate, 120.0)
        probe.end()
        done.set()
        await task
        result = summarize(sent, PipelineOptions(rate=rate))
        return {
            "meta": {
                "seconds": seconds,
                "rate": rate,
                "model_latency_ms": model_latency_ms,
                "projects": projects,
            },
            "results": result,
            "verdict": verdict(samples),
            "processes": probe.summary(),
            "samples": samples,
        }
    finally:
        with contextlib.suppress(Exception):
            await lag.stop()
        with contextlib.suppress(Exception):
            await client.stop()
        fleet.stop()
        infra.stop()

        shutil.rmtree(work, ignore_errors=True)


def verdict(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS: median of the last quarter minus median of the first quarter; lag: max and last per consumer."""
    quarter = max(1, len(samples) // 4)
    first, last = samples[:quarter], samples[-quarter:]
    rss = {}
    for name in samples[0]["rss_mb"] if samples else []:
        a = statistics.median(s["rss_mb"][name] for s in first)
        b = statistics.median(s["rss_mb"][name] for s in last)
        rss[name] = {"first_quarter_mb": a, "last_quarter_mb": b, "growth_mb": round(b - a, 1)}
    lags = [s["lag"] for s in samples if "lag" in s]
    lag = {
        name: {"max": max(x.get(name, 0) for x in lags), "last": lags[-1].get(name, 0)}
        for name in (lags[0] if lags else {})
    }
    return {"rss": rss, "lag": lag}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--every", type=float, default=5, help="seconds between samples")
    parser.add_argument("--model-latency-ms", type=float, default=50)
    parser.add_argument("--projects", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("soak.json"))
    args = parser.parse_args()

    setup_logging("WARNING", json_lines=False)
    doc = asyncio.run(soak(args.seconds, args.rate, args.every, args.model_latency_ms, args.projects))
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"results": doc["results"], "verdict": doc["verdict"]}, indent=2))


if __name__ == "__main__":
    main()
