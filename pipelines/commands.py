"""``cairn`` commands that need the Dagster code location, registered through the ``cairn.commands``
entry-point group (the library's CLI never imports :mod:`pipelines` itself)."""

import argparse
from pathlib import Path

from integrity.cli.common import AddCommand, add_location_options, emit
from integrity.errors import EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.staging import run_demo, stage_demo

    home = Path(args.home).resolve() if args.home else None
    if args.stage_only:
        staged = stage_demo(home)
        emit(args, {"home": str(staged), "drops": str(staged / "drops")}, f"vendor drops staged in {staged / 'drops'}")
        return EXIT_OK
    return run_demo(json_output=args.json, home=home)


def register(add: AddCommand) -> None:
    p = add("demo", cmd_demo, "stage the demo vendor drops and run the whole pipeline through Dagster (offline)")
    add_location_options(p, store=False)
    p.add_argument("--stage-only", action="store_true", help="only stage the signed vendor drops and the policy")
