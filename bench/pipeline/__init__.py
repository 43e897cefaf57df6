"""``querylift bench pipeline``: throughput, added latency, lag and resource use of the five real consumers."""
