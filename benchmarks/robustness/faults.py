"""Fault injection: S3 faults on every request of publish and pull, and kill -9 at random points.

**S3 faults.** A small HTTP proxy on loopback sits between boto3 and moto's S3 server. For one
trial it breaks exactly one request (the k-th) in one way: a 500, a 503 SlowDown (throttling),
a connection reset before any response, a body cut off halfway, or a stall longer than the
client's timeout. Every k of a publish's and a pull's request sequence is tried with each fault.
After each trial the invariants are checked without the proxy:

* *nothing partial is visible*: a publication record exists only if the whole release pulls and
  verifies; a failed pull leaves no destination and no staging folder;
* *a rerun heals*: publishing (or pulling) again without faults succeeds;
* *the ledger and the store verify* (``Ledger.verify``, ``verify_store``).

**kill -9.** A child process publishes a release (or ingests and attests a dataset) into a local
store and is killed with SIGKILL at a random moment; then the same invariants are checked, the
step is rerun to completion, and checked again.
"""

from __future__ import annotations

import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FAULTS = ("http-500", "http-503-slowdown", "reset", "truncated-body", "stall")
REPO = Path(__file__).resolve().parents[2]
MODEL = "digits-classifier"


class FaultProxy:
    """Forwards HTTP to ``upstream``; breaks the request numbered ``fault_at`` (1-based) with ``fault``."""

    def __init__(self, upstream: str, stall_seconds: float = 3.0) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.stall_seconds = stall_seconds
        self.fault: str | None = None
        self.fault_at = 0
        self.count = 0
        self.injected = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    proxy.count += 1
                    broken = proxy.fault if proxy.count == proxy.fault_at else None
                    if broken:
                        proxy.injected += 1
                if broken == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.close_connection = True
                    return
                if broken == "stall":
                    time.sleep(proxy.stall_seconds)
                    self.close_connection = True
                    return
                if broken in ("http-500", "http-503-slowdown"):
                    code, name = (500, "InternalError") if broken == "http-500" else (503, "SlowDown")
                    payload = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{name}</Code>"
                               f"<Message>injected</Message></Error>").encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if broken == "truncated-body" and self.command == "GET" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def arm(self, fault: str | None, at: int) -> None:
        with self.lock:
            self.fault, self.fault_at, self.count, self.injected = fault, at, 0, 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Trial:
    operation: str
    fault: str
    at: int
    injected: bool
    outcome: str  # "succeeded" (retried through) or "failed cleanly"
    error: str = ""
    partial: bool = False
    healed: bool = True
    verified: bool = True
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class World:
    """A moto server, a signed release bundle, a release policy and a ledger key for the trials."""

    def __init__(self, root: Path) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        from integrity.trust.policy import load_policy
        from tests.support.distribution import make_release_key, write_release_policy, write_test_bundle

        self.root = root
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent",
                    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        private, public = make_release_key(root / "keys")
        self.private, self.public = private, public
        self.policy_path = write_release_policy(root / "release-policy.yaml", MODEL, public)
        self.policy = load_policy(self.policy_path)
        self.bundle = write_test_bundle(root / "bundle", private, model=MODEL, version="1.0.0", sequence=1,
                                        weights_size=200_000)
        self.home = root / "home"

    def bucket(self) -> str:
        from tests.support.s3server import make_client

        name = f"fault-{uuid.uuid4().hex[:12]}"
        make_client(self.endpoint).create_bucket(Bucket=name)
        return name

    def store(self, bucket: str, endpoint: str) -> Any:
        from integrity.storage import open_store

        return open_store(f"s3://{bucket}/rel", endpoint_url=endpoint)

    def close(self) -> None:
        self.moto.stop()


def _verify_ledger_and_store(store: Any, ledger_public_key: Path, trial: Trial) -> None:
    """The ledger (when there is one) and every stored object verify; failures go into ``trial``."""
    from integrity.errors import CairnError
    from integrity.ledger import Ledger
    from integrity.storage.check import verify_store

    try:
        if any(True for _ in store.backend.list_keys("ledger/entries/")):
            Ledger(store, public_key=ledger_public_key).verify()
        report = verify_store(store, quarantine=False)
        if not report.ok:
            trial.verified = False
            trial.problems.append(f"store verify: {report.problems[:2]}")
    except CairnError as exc:
        trial.verified = False
        trial.problems.append(f"ledger/store verify: {exc.summary()}")


def _check(world: World, bucket: str, trial: Trial, dest: Path | None = None) -> None:
    """Invariants without the proxy: complete-or-absent publication, verifying ledger and store."""
    from integrity.distribution import StoreSource, list_publications, pull
    from integrity.errors import CairnError

    store = world.store(bucket, world.endpoint)
    try:
        if list_publications(store, MODEL):
            check_dest = world.root / f"check-{uuid.uuid4().hex[:8]}"
            pull(StoreSource(store), MODEL, "1.0.0", check_dest, world.policy, progress=False, timeout=120)
            shutil.rmtree(check_dest)
    except CairnError as exc:
        trial.partial = True
        trial.problems.append(f"visible publication does not pull: {exc.summary()}")
    if dest is not None and trial.outcome != "succeeded":
        leftovers = [p.name for p in dest.parent.glob(f".{dest.name}*")]
        if dest.exists() or leftovers:
            trial.partial = True
            trial.problems.append(f"failed pull left {dest if dest.exists() else leftovers}")
    _verify_ledger_and_store(store, world.home / "keys" / "ledger.pub", trial)


def _publish(world: World, store: Any) -> Any:
    from integrity.distribution import publish
    from integrity.ledger.transparency import open_ledger

    return publish(store, world.bundle, world.policy, ledger=open_ledger(store, home=world.home))


def count_requests(world: World, proxy: FaultProxy) -> tuple[int, int]:
    """How many S3 requests a publish and a pull make (the k's to break)."""
    from integrity.distribution import StoreSource, pull

    bucket = world.bucket()
    proxy.arm(None, 0)
    _publish(world, world.store(bucket, proxy.url))
    published = proxy.count
    proxy.arm(None, 0)
    dest = world.root / f"count-{uuid.uuid4().hex[:6]}"
    pull(StoreSource(world.store(bucket, proxy.url)), MODEL, "1.0.0", dest, world.policy, progress=False)
    shutil.rmtree(dest)
    return published, proxy.count


def s3_trials(world: World, *, limit: int | None = None, seed: int = 0,
              progress: Callable[[Trial], None] | None = None) -> list[Trial]:
    """Every (operation, fault, k) combination, or ``limit`` of them drawn at random."""
    from integrity.distribution import StoreSource, pull
    from integrity.errors import CairnError

    proxy = FaultProxy(world.endpoint)
    trials: list[Trial] = []
    try:
        with _environment({**world.env, "CAIRN_S3_TIMEOUT": "1"}):
            publish_requests, pull_requests = count_requests(world, proxy)
            plan = [("publish", f, k) for f in FAULTS for k in range(1, publish_requests + 1)]
            plan += [("pull", f, k) for f in FAULTS for k in range(1, pull_requests + 1)]
            if limit is not None and limit < len(plan):
                plan = random.Random(seed).sample(plan, limit)
            for operation, fault, at in plan:
                bucket = world.bucket()
                dest = None
                if operation == "pull":
                    _publish(world, world.store(bucket, world.endpoint))
                    dest = world.root / f"pull-{uuid.uuid4().hex[:8]}"
                proxy.arm(fault, at)
                trial = Trial(operation, fault, at, False, "succeeded")
                try:
                    if operation == "publish":
                        _publish(world, world.store(bucket, proxy.url))
                    else:
                        assert dest is not None
                        pull(StoreSource(world.store(bucket, proxy.url)), MODEL, "1.0.0", dest, world.policy,
                             progress=False, timeout=120)
                except CairnError as exc:
                    trial.outcome, trial.error = "failed cleanly", exc.summary()[:200]
                except Exception as exc:
                    trial.outcome, trial.error = "failed uncleanly", f"{type(exc).__name__}: {exc}"[:200]
                    trial.problems.append(trial.error)
                trial.injected = proxy.injected > 0
                proxy.arm(None, 0)
                _check(world, bucket, trial, dest)
                try:  # a rerun without faults heals
                    if operation == "publish":
                        _publish(world, world.store(bucket, world.endpoint))
                    else:
                        assert dest is not None
                        if not dest.exists():
                            pull(StoreSource(world.store(bucket, world.endpoint)), MODEL, "1.0.0", dest,
                                 world.policy, progress=False)
                except CairnError as exc:
                    trial.healed = False
                    trial.problems.append(f"rerun: {exc.summary()}")
                _check(world, bucket, trial)
                if dest is not None:
                    shutil.rmtree(dest, ignore_errors=True)
                trials.append(trial)
                if progress:
                    progress(trial)
    finally:
        proxy.close()
    return trials


# -- kill -9 ------------------------------------------------------------------------------------------------

_PUBLISH_CHILD = """
import sys
from pathlib import Path
from integrity.distribution import publish
from integrity.trust.policy import load_policy
from integrity.storage import open_store
from integrity.ledger.transparency import open_ledger
store = open_store(Path(sys.argv[1]))
publish(store, Path(sys.argv[2]), load_policy(sys.argv[3]), ledger=open_ledger(store, home=Path(sys.argv[4])))
"""


def kill_trials(world: World, count: int, *, seed: int = 0,
                progress: Callable[[Trial], None] | None = None) -> list[Trial]:
    """Publish into a local store, SIGKILL the child at a random moment, check, rerun, check."""
    from integrity.storage import open_store

    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # How long an undisturbed publish takes, to spread the kills over it.
    probe = world.root / "probe-store"
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", _PUBLISH_CHILD, str(probe), str(world.bundle), str(world.policy_path),
                    str(world.home)], env=env, check=True)
    duration = time.monotonic() - started
    trials = []
    for number in range(count):
        root = world.root / f"kill-{number}"
        delay = rng.uniform(0.05, duration)
        child = subprocess.Popen([sys.executable, "-c", _PUBLISH_CHILD, str(root), str(world.bundle),
                                  str(world.policy_path), str(world.home)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        killed = child.poll() is None
        if killed:
            child.send_signal(signal.SIGKILL)
        child.wait()
        trial = Trial("publish (local store)", "kill -9", round(delay * 1000), killed,
                      "killed" if killed else "finished first")
        _check_local(world, root, trial)
        rerun = subprocess.run([sys.executable, "-c", _PUBLISH_CHILD, str(root), str(world.bundle),
                                str(world.policy_path), str(world.home)], env=env, capture_output=True, text=True)
        if rerun.returncode != 0:
            trial.healed = False
            trial.problems.append(f"rerun: {rerun.stderr.strip().splitlines()[-1:]}")
        _check_local(world, root, trial)
        if not trial.problems and open_store(root):
            shutil.rmtree(root, ignore_errors=True)
        trials.append(trial)
        if progress:
            progress(trial)
    return trials


def _check_local(world: World, root: Path, trial: Trial) -> None:
    from integrity.distribution import StoreSource, list_publications, pull
    from integrity.errors import CairnError
    from integrity.storage import open_store

    if not root.exists():
        return
    store = open_store(root)
    try:
        if list_publications(store, MODEL):
            dest = world.root / f"check-{uuid.uuid4().hex[:8]}"
            pull(StoreSource(store), MODEL, "1.0.0", dest, world.policy, progress=False)
            shutil.rmtree(dest)
    except CairnError as exc:
        trial.partial = True
        trial.problems.append(f"visible publication does not pull: {exc.summary()}")
    _verify_ledger_and_store(store, world.home / "keys" / "ledger.pub", trial)


def new_world() -> World:
    return World(Path(tempfile.mkdtemp(prefix="cairn-faults-")))


# -- kill -9 during ingestion (fetch, verify, validate, attest) --------------------------------------------

INGEST_SOURCE = "ct-mr-dicom"  # a dataset no screen applies to: its attestation alone makes it a training input


def _staged_home(root: Path) -> Path:
    from pipelines.staging import stage_demo

    base = root / "staged-base"
    if not base.exists():
        stage_demo(base)
    return base


def _ingest_command(home: Path) -> list[str]:
    return [sys.executable, "-m", "integrity.cli", "ingest", "run", "--source", INGEST_SOURCE, "--catalog",
            str(REPO / "integrity" / "data" / "catalogs" / "demo.yaml"), "--home", str(home)]


def _check_ingestion(home: Path, trial: Trial, *, must_be_attested: bool) -> None:
    """Store and ledger verify; an attestation that is visible must resolve as a training input."""
    from integrity.errors import CairnError
    from integrity.intake.catalog import load_catalog
    from integrity.intake.ingest import Ingestion
    from integrity.release.inputs import resolve_input
    from integrity.release.spec import InputRef
    from integrity.storage import open_store

    store_path = home / "store"
    if not store_path.exists():
        if must_be_attested:
            trial.healed = False
            trial.problems.append("no store after the rerun")
        return
    store = open_store(store_path)
    _verify_ledger_and_store(store, home / "keys" / "ledger.pub", trial)
    try:
        ingestion = Ingestion.open(load_catalog(REPO / "integrity" / "data" / "catalogs" / "demo.yaml", root=home,
                                                strict=False), home=home, store=str(store_path))
        source = ingestion.catalog.source(INGEST_SOURCE)
        if ingestion.attested_record(source) is not None:
            resolve_input(ingestion, InputRef(INGEST_SOURCE, "training-data"))
        elif must_be_attested:
            trial.healed = False
            trial.problems.append("not attested after the rerun")
    except CairnError as exc:
        trial.partial = True
        trial.problems.append(f"a visible attestation does not resolve: {exc.summary()}")


def ingest_kill_trials(world: World, count: int, *, seed: int = 0,
                       progress: Callable[[Trial], None] | None = None) -> list[Trial]:
    """``cairn ingest run`` of one dataset killed with SIGKILL at a random moment, checked, rerun, checked."""
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = _staged_home(world.root)
    probe = world.root / "ingest-probe"
    shutil.copytree(base, probe)
    started = time.monotonic()
    subprocess.run(_ingest_command(probe), env=env, check=True, capture_output=True)
    duration = time.monotonic() - started
    shutil.rmtree(probe, ignore_errors=True)
    trials = []
    for number in range(count):
        home = world.root / f"ingest-kill-{number}"
        shutil.copytree(base, home)
        delay = rng.uniform(0.2, duration)
        child = subprocess.Popen(_ingest_command(home), env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(delay)
        killed = child.poll() is None
        if killed:
            child.send_signal(signal.SIGKILL)
        child.wait()
        trial = Trial("ingest+attest (local store)", "kill -9", round(delay * 1000), killed,
                      "killed" if killed else "finished first")
        _check_ingestion(home, trial, must_be_attested=False)
        rerun = subprocess.run(_ingest_command(home), env=env, capture_output=True, text=True)
        if rerun.returncode != 0:
            trial.healed = False
            trial.problems.append(f"rerun exit {rerun.returncode}: {rerun.stdout.strip().splitlines()[-2:]}")
        _check_ingestion(home, trial, must_be_attested=True)
        if not trial.problems:
            shutil.rmtree(home, ignore_errors=True)
        trials.append(trial)
        if progress:
            progress(trial)
    return trials
