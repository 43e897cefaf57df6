"""Plugs ``querylift bench pipeline`` (bench/pipeline/cli.py) into the ``bench`` group of cmd_bench.py."""

from bench.pipeline.cli import register_pipeline as register_bench

__all__ = ["register_bench"]
