"""What every command group shares: output, the hashing options, the Cairn-home options."""

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


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


#: The signer options, worded the same on ``cairn verify`` and ``cairn policy add``.
KEY_HELP = "the signer's pinned public key (PEM)"
IDENTITY_HELP = "the signer's identity: Sigstore SAN (e-mail or workflow URI), or the certificate subject with --ca"
ISSUER_HELP = "the signer's OIDC issuer URL (Sigstore)"


def add_signer_options(parser: argparse.ArgumentParser, *, certificates: bool = False) -> None:
    """``--key``, ``--identity``, ``--issuer`` (and ``--ca``/``--tsa``): who may sign, on every command that says it."""
    parser.add_argument("--key", help=KEY_HELP)
    parser.add_argument("--identity", help=IDENTITY_HELP)
    parser.add_argument("--issuer", help=ISSUER_HELP)
    if certificates:
        parser.add_argument("--ca", help="pinned PEM CA certificate(s) (certificate method)")
        parser.add_argument("--tsa", help="pinned PEM timestamp-authority certificate(s) (certificate method)")


class _RenamedOption(argparse.Action):
    """An option's old name: still accepted, stored under the new name's dest, with a warning."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        log.warning("%s is now called %s; the old name will go in a later release", option_string, self.new)
        setattr(namespace, self.dest, values)


def add_renamed_option(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Keep ``old`` working for ``new`` (one name per concept; old scripts do not break). Hidden from help."""
    dest = new.lstrip("-").replace("-", "_")
    parser.add_argument(old, dest=dest, action=_RenamedOption, new=new, help=argparse.SUPPRESS)
