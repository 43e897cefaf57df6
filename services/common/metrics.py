"""Prometheus metrics shared by every consumer. Labels are bounded: topic, consumer, stage, project id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

EVENTS_CONSUMED = Counter(
    "querylift_events_consumed_total", "Events read from a topic.", ["consumer", "topic"]
)
EVENTS_PRODUCED = Counter("querylift_events_produced_total", "Events published to a topic.", ["consumer", "topic"])
EVENTS_FAILED = Counter(
    "querylift_events_failed_total", "Events that could not be handled (dead-lettered).", ["consumer", "topic", "reason"]
)
EVENTS_DUPLICATE = Counter(
    "querylift_events_duplicate_total", "Redelivered events skipped by idempotency.", ["consumer", "topic"]
)
DEAD_LETTERS = Counter("querylift_dead_letters_total", "Events sent to the dead-letter topic.", ["consumer", "reason"])
HANDLER_SECONDS = Histogram(
    "querylift_handler_duration_seconds", "Time to handle one event.", ["consumer", "topic"], buckets=_LATENCY_BUCKETS
)
STAGE_SECONDS = Histogram(
    "querylift_stage_duration_seconds", "Time spent in one pipeline stage.", ["stage"], buckets=_LATENCY_BUCKETS
)
ANSWER_SECONDS = Histogram(
    "querylift_answer_latency_seconds",
    "Question accepted to answer published (end to end).",
    ["project"],
    buckets=_LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge("querylift_consumer_lag", "Messages behind the partition end.", ["consumer", "topic", "partition"])
UP = Gauge("querylift_consumer_up", "1 while the consumer loop runs.", ["consumer"])
