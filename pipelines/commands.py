"""``cairn`` commands that need the Dagster code location, registered through the ``cairn.commands``
entry-point group (the library's CLI never imports :mod:`pipelines` itself)."""

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from integrity.errors import EXIT_OK


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    import json

    print(json.dumps(data, indent=2, sort_keys=True) if getattr(args, "json", False) else text)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.staging import run_demo, stage_demo

    home = Path(args.home).resolve() if args.home else None
    if args.stage_only:
        staged = stage_demo(home)
        _emit(args, {"home": str(staged), "drops": str(staged / "drops")}, f"vendor drops staged in {staged / 'drops'}")
        return EXIT_OK
    return run_demo(json_output=args.json, home=home)


def register(add: Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]) -> None:
    p = add("demo", cmd_demo, "stage the demo vendor drops and run the whole pipeline through Dagster (offline)")
    p.add_argument("--home", help="Cairn home (default $CAIRN_HOME or ./.cairn)")
    p.add_argument("--stage-only", action="store_true", help="only stage the signed vendor drops and the policy")
