"""The ``cairn`` command line: one module per command group, shared option groups.

The top layer: it may import everything in :mod:`integrity`, never :mod:`pipelines` (extra commands,
such as ``cairn demo``, register through the ``cairn.commands`` entry-point group).
"""

from integrity.cli.main import main

__all__ = ["main"]
