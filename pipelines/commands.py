"""``cairn`` commands that need the Dagster code location, registered through the ``cairn.commands``
entry-point group (the library's CLI never imports :mod:`pipelines` itself)."""

import argparse
import logging
from pathlib import Path

from integrity.cli.common import AddCommand, add_location_options, emit
from integrity.errors import EXIT_OK

log = logging.getLogger(__name__)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.staging import run_demo, stage_demo

    home = Path(args.home).resolve() if args.home else None
    if args.stage_only:
        staged = stage_demo(home)
        emit(args, {"home": str(staged), "drops": str(staged / "drops")}, f"vendor drops staged in {staged / 'drops'}")
        return EXIT_OK
    return run_demo(json_output=args.json, home=home)


def _workspace(named: str | None) -> Path:
    """The workspace file: the one named, else ./workspace.yaml, else the project's, else one written for Cairn."""
    from integrity.errors import UsageError
    from integrity.settings import current

    if named:
        path = Path(named)
        if not path.is_file():
            raise UsageError("no such workspace file", artifact=named)
        return path.resolve()
    project = current().project_dir
    for candidate in (Path("workspace.yaml"), *((project / "workspace.yaml",) if project else ())):
        if candidate.is_file():
            return candidate.resolve()
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="cairn-ui-"))
    from integrity.cli.project import WORKSPACE

    (folder / "workspace.yaml").write_text(WORKSPACE)
    return folder / "workspace.yaml"


def cmd_ui(args: argparse.Namespace) -> int:
    """The whole deployment of the project: the Dagster webserver, the daemon (run queue, schedules, sensors)
    and the report server the UI's links point to, on one instance (``HOME/dagster``); they stop together."""
    import os
    import shutil
    import sys

    from integrity.cli.distribution import listen_address
    from integrity.distribution.reports import ReportServer
    from integrity.errors import UsageError
    from integrity.settings import current
    from integrity.storage import open_store

    settings = current(home=args.home, store=args.store, reports_url=args.reports_url)
    webserver = shutil.which("dagster-webserver", path=str(Path(sys.executable).parent)) or shutil.which(
        "dagster-webserver")
    if webserver is None:
        raise UsageError("dagster-webserver is not installed in this environment",
                         advice="install Cairn with its pipelines (scripts/bootstrap.sh)")
    workspace = _workspace(args.workspace)
    env = {**os.environ, "CAIRN_HOME": str(settings.home), "CAIRN_STORE": settings.store,
           "CAIRN_REPORTS_URL": settings.reports_url or "none",
           "DAGSTER_HOME": os.environ.get("DAGSTER_HOME") or str(settings.home / "dagster")}
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    commands = [[webserver, "-w", str(workspace), "-h", args.host, "-p", str(args.port)]]
    daemon = shutil.which("dagster-daemon", path=str(Path(sys.executable).parent)) or shutil.which("dagster-daemon")
    if not args.no_daemon:
        if daemon is None:
            raise UsageError("dagster-daemon is not installed in this environment: runs launched from the UI, "
                             "schedules and sensors would never run", advice="install Cairn with its pipelines "
                             "(scripts/bootstrap.sh), or pass --no-daemon to browse only")
        commands.append([daemon, "run", "-w", str(workspace)])
    running = ("the daemon (run queue, schedules, sensors)" if not args.no_daemon
               else "NO daemon (--no-daemon: launched runs stay queued)")
    if settings.reports_url is None:
        print(f"Dagster UI at http://{args.host}:{args.port} with {running}; no report server "
              f"(CAIRN_REPORTS_URL=none); Dagster instance {env['DAGSTER_HOME']}", flush=True)
        return _run_until_stopped(commands, env, workspace.parent)
    host, port = listen_address(settings.reports_url, None, None)
    try:
        server = ReportServer(open_store(settings.store), settings.releases, host=host, port=port, home=settings.home)
    except UsageError as error:  # here --port is the Dagster UI's: say which setting moves the report server
        advice = (f"choose another report server port with --reports-url http://{host}:PORT or "
                  f"$CAIRN_REPORTS_URL (--port {args.port} is the Dagster UI's)")
        raise UsageError(error.reason, advice=advice) from error
    with server.running():
        print(f"Dagster UI at http://{args.host}:{args.port} with {running}; records, Data Docs, lineage and "
              f"audits at {settings.reports_url}; Dagster instance {env['DAGSTER_HOME']} (Ctrl-C stops all)",
              flush=True)
        return _run_until_stopped(commands, env, workspace.parent)


def _run_until_stopped(commands: list[list[str]], env: dict[str, str], cwd: Path) -> int:
    """Run the webserver (and the daemon beside it) until one of them ends or Ctrl-C/SIGTERM: then stop them all.

    Never left half running: a webserver without its daemon queues runs that never start, one without its
    report server shows dead links.
    """
    import signal
    import subprocess
    import time

    children = [subprocess.Popen(command, env=env, cwd=cwd) for command in commands]

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    code = EXIT_OK
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        ended = next(child for child in children if child.returncode is not None)
        code = ended.returncode
        log.error("%s exited with %s; stopping the rest", Path(str(ended.args[0])).name, code)
    except KeyboardInterrupt:
        code = EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, previous)
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
    return code


def register(add: AddCommand) -> None:
    p = add("ui", cmd_ui, "run the project's Dagster UI, daemon and report server together (Ctrl-C stops all)")
    add_location_options(p)
    p.add_argument("--workspace", help="Dagster workspace file (default ./workspace.yaml, else the project's)")
    p.add_argument("--host", default="127.0.0.1", help="address the Dagster UI listens on")
    p.add_argument("--port", type=int, default=3000, help="port of the Dagster UI (default 3000)")
    p.add_argument("--reports-url", help="the report server's URL (default $CAIRN_REPORTS_URL or "
                                         "http://127.0.0.1:3100)")
    p.add_argument("--no-daemon", action="store_true",
                   help="do not start dagster-daemon (runs launched from the UI then stay queued)")

    p = add("demo", cmd_demo, "stage the demo vendor drops and run the whole pipeline through Dagster (offline)")
    add_location_options(p, store=False)
    p.add_argument("--stage-only", action="store_true", help="only stage the signed vendor drops and the policy")
