"""``querylift schemas export|check``: the event contracts as JSON Schema and AsyncAPI files."""

from __future__ import annotations

import argparse
from pathlib import Path

from events.export import drift, write_all


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "schemas", help="Export or check the event JSON Schemas and AsyncAPI document."
    )
    sub = parser.add_subparsers(dest="schemas_command", required=True)

    export = sub.add_parser("export", help="Write schemas/<type>.v<version>.json and schemas/asyncapi.yaml.")
    export.add_argument(
        "--out", type=Path, default=Path("schemas"), help="Output folder (default: schemas/)."
    )
    export.set_defaults(func=_export)

    check = sub.add_parser("check", help="Exit 1 when the files in --out differ from the event models.")
    check.add_argument(
        "--out", type=Path, default=Path("schemas"), help="Folder to compare (default: schemas/)."
    )
    check.set_defaults(func=_check)


def _export(args: argparse.Namespace) -> int:
    for path in write_all(args.out):
        print(path)
    return 0


def _check(args: argparse.Namespace) -> int:
    stale = drift(args.out)
    for name in stale:
        print(f"out of date: {args.out / name}")
    if stale:
        print("run `querylift schemas export` to regenerate")
        return 1
    print(f"{args.out}: up to date")
    return 0
