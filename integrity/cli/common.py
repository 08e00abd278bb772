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
