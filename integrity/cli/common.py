"""What every command group shares: output, the hashing options, the Cairn-home options."""

import argparse
import json
from collections.abc import Callable
from typing import Any


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(text)


def hashing_config(args: argparse.Namespace) -> Any:
    from integrity.trust.hashing import HashingConfig

    config = HashingConfig()
    if getattr(args, "shard_size", None):
        config = config.use_shards(args.shard_size)
    if getattr(args, "workers", None):
        config = config.with_workers(args.workers)
    return config


def write_record(path: str, text: str) -> None:
    from integrity.trust.signing import atomic_write

    atomic_write(path, text.encode())


#: How a command group registers a command: ``add(name, handler, help)`` returns its parser.
AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


# -- shared option groups (as sigstore-python shares its verify options) ------------------------------------

HOME_HELP = "Cairn home (default $CAIRN_HOME, the project file, else ./.cairn)"
STORE_HELP = "artifact store: a path or s3://bucket/prefix (default $CAIRN_STORE, the project file, else HOME/store)"
CATALOG_HELP = "catalog YAML (default $CAIRN_CATALOG, the project file, else the packaged demo catalog)"


def add_location_options(parser: argparse.ArgumentParser, *, home: bool = True, store: bool = True,
                         catalog: bool = False, store_help: str = STORE_HELP) -> None:
    """``--home``, ``--store`` and ``--catalog``, worded the same on every command (settings.py resolves them)."""
    if catalog:
        parser.add_argument("--catalog", help=CATALOG_HELP)
    if home:
        parser.add_argument("--home", help=HOME_HELP)
    if store:
        parser.add_argument("--store", help=store_help)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
