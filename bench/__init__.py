"""Benchmarks of querylift: ``bench.accuracy`` measures what each product configuration answers correctly."""
