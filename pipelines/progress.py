"""Progress for long in-process runs (``cairn demo``): one line per step message, as it happens.

A Dagster logger that prints only what Cairn's assets log (which stage, which source, the verdict;
``!!`` marks a rejection or a failure), never Dagster's own events; the full event log stays in the
instance, where the UI shows it.
"""

import logging
import sys
from typing import Any

import dagster as dg

LOGGER = "cairn_progress"
#: What Dagster itself logs as plain messages about steps it skips or fails (a failed gate's cascade);
#: Cairn's own lines already say why.
_DAGSTER_LINES = ("Dependencies for step", "Execution of step", "Execution of run", "Started execution",
                  "Finished execution", "Executing steps", "Skipping", "Step ")


class _ProgressHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        meta: Any = getattr(record, "dagster_meta", None)
        if not isinstance(meta, dict):
            return
        if meta.get("dagster_event") is not None:
            return  # Dagster's own events (a failed gate's cascade of skipped steps); Cairn's lines say why
        step = str(meta.get("step_key") or "run").replace("__", "/")
        message = str(meta.get("orig_message") or record.getMessage()).strip().splitlines()
        if not message:
            return
        if message[0].startswith(_DAGSTER_LINES):
            return
        mark = "!!" if record.levelno >= logging.ERROR else "  "
        print(f"{mark} [{step}] {message[0][:200]}", file=sys.stderr, flush=True)


@dg.logger(description="Cairn's progress lines: which stage, which source, the verdict (stderr).")
def cairn_progress(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger(LOGGER, level=logging.INFO)
    logger.addHandler(_ProgressHandler())
    return logger


def progress_run_config(show: bool) -> dict[str, Any]:
    """Run config selecting the progress logger (``show``) or a silent console."""
    if show:
        return {"loggers": {LOGGER: {}}}
    return {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
