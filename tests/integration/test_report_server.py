"""The report server the UI links to: records, Data Docs and release files over HTTP, read-only, on a local
store and on S3 (moto's server); without a server, an S3 store's links are presigned URLs."""

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from integrity.distribution.reports import ReportLinks, ReportServer
from integrity.errors import UsageError
from integrity.storage import ArtifactStore, open_store
from tests.support import free_port
from tests.support.s3server import S3Bucket, s3_bucket, s3_server  # noqa: F401

RECORD = "records/verifications/digits-0001.json"
DOCS = "reports/data-docs/digits/index.html"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        opened = open_store(str(tmp_path / "store"))
    else:
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        opened = open_store(f"s3://{bucket.name}/cairn")
    opened.write_key(RECORD, json.dumps({"source": "digits", "passed": True}).encode())
    opened.write_key(DOCS, b"<html><body>Data Docs: digits <a href='validations/x.html'>run</a></body></html>")
    opened.write_key("trusted/blobs/ab/abcd", b"attested bytes")
    return opened


@pytest.fixture
def releases(tmp_path: Path) -> Path:
    folder = tmp_path / "releases" / "digits-classifier-1.0.0"
    folder.mkdir(parents=True)
    (folder / "lineage.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><text>lineage</text></svg>")
    (folder / "release.json").write_text(json.dumps({"model": "digits-classifier"}))
    (tmp_path / "outside.txt").write_text("secret")
    return tmp_path / "releases"


def _get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def test_serves_records_docs_and_release_files_and_nothing_else(store: ArtifactStore, releases: Path) -> None:
    with ReportServer(store, releases, port=0).running() as server:
        links = ReportLinks(server.url, store)
        status, kind, body = _get(str(links.record(RECORD)))
        assert (status, kind) == (200, "application/json") and json.loads(body)["source"] == "digits"
        status, kind, body = _get(str(links.record(DOCS)))
        assert status == 200 and kind.startswith("text/html") and b"Data Docs: digits" in body
        release = releases / "digits-classifier-1.0.0"
        status, kind, body = _get(str(links.release_file(release, "lineage.svg")))
        assert status == 200 and kind.startswith("image/svg+xml") and b"lineage" in body
        status, _, body = _get(server.url + "/")
        assert status == 200 and b"digits-classifier-1.0.0" in body
        # The trusted copies, the staging area and anything outside the two roots are never served.
        for path, expected in (("/store/trusted/blobs/ab/abcd", 403), ("/store/tmp/x", 403),
                               ("/store/records/%2e%2e/trusted/blobs/ab/abcd", 403),
                               ("/releases/digits-classifier-1.0.0/..%2f..%2foutside.txt", 403),
                               ("/releases/%2e%2e/outside.txt", 403), ("/store/records/missing.json", 404),
                               ("/releases/nope/release.json", 404), ("/anything", 404)):
            status, _, body = _get(server.url + path)
            assert status == expected, (path, status, body)
            assert b"secret" not in body and b"attested bytes" not in body
        for method in ("POST", "PUT", "DELETE"):
            assert _get(server.url + "/store/" + RECORD, method)[0] == 405
        assert store.read_key(RECORD)  # nothing changed


def test_audit_page_of_a_folder_that_is_not_a_release_says_it_failed(store: ArtifactStore, releases: Path,
                                                                       tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    with ReportServer(store, releases, port=0, home=tmp_path / "home").running() as server:
        status, kind, body = _get(server.url + "/audit/digits-classifier-1.0.0")
    assert status == 200 and kind.startswith("text/html")
    assert b"AUDIT FAILED" in body  # a bundle without signatures never reads as passed


def test_links_without_a_server(store: ArtifactStore) -> None:
    links = ReportLinks(None, store)
    url = links.record(RECORD)
    if "presigned-urls" in store.capabilities:  # S3: a presigned URL that fetches the record
        assert url is not None and url.startswith("http")
        status, _, body = _get(url)
        assert status == 200 and json.loads(body)["passed"] is True
    else:  # a local store without a server: no link (the UI shows the path as text, never file://)
        assert url is None
    assert links.audit(Path("x")) is None and links.record(None) is None


def test_link_urls_quote_keys() -> None:
    links = ReportLinks("http://reports.example:3100", None)
    assert links.record("records/a b#c.json") == "http://reports.example:3100/store/records/a%20b%23c.json"
    assert links.audit(Path("/r/m-1.0")) == "http://reports.example:3100/audit/m-1.0"


def test_busy_port_is_a_usage_error(store: ArtifactStore, releases: Path) -> None:
    with ReportServer(store, releases, port=0).running() as server:
        port = int(server.url.rsplit(":", 1)[1])
        with pytest.raises(UsageError, match="cannot serve reports"):
            ReportServer(store, releases, port=port)


def test_cairn_serve_command(tmp_path: Path) -> None:
    home = tmp_path / "home"
    opened = open_store(str(home / "store"))
    opened.write_key(RECORD, b"{}")
    port = free_port()
    cairn = str(Path(sys.executable).parent / "cairn")
    process = subprocess.Popen([cairn, "serve", "--home", str(home), "--reports-url", f"http://127.0.0.1:{port}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, line
        assert _get(f"http://127.0.0.1:{port}/store/{RECORD}")[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=20)
    bad = subprocess.run([cairn, "serve", "--home", str(home), "--reports-url", "ftp://x"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "CAIRN_REPORTS_URL" in bad.stdout + bad.stderr


def test_cairn_ui_serves_the_dagster_ui_and_the_report_server_and_stops_both(tmp_path: Path) -> None:
    import os
    import signal
    import time

    from tests.support.webserver import REPO, WEBSERVER

    if not WEBSERVER.exists():
        pytest.skip(f"dagster-webserver not installed at {WEBSERVER}")
    home = tmp_path / "home"
    open_store(str(home / "store")).write_key(RECORD, b'{"ok": true}')
    ui, reports = free_port(), free_port()
    env = {**os.environ, "DAGSTER_DISABLE_TELEMETRY": "1", "CAIRN_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    process = subprocess.Popen([str(Path(sys.executable).parent / "cairn"), "ui", "--home", str(home), "--port",
                                str(ui), "--reports-url", f"http://127.0.0.1:{reports}"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if _get(f"http://127.0.0.1:{ui}/server_info")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "cairn ui did not start"
            time.sleep(0.5)
        assert _get(f"http://127.0.0.1:{reports}/store/{RECORD}")[0] == 200  # beside it, the report server
        assert (home / "dagster").is_dir()  # the instance lives in the home unless DAGSTER_HOME says otherwise
        # and the daemon: the UI itself reports its scheduler, sensors and run queue healthy
        assert _daemons_healthy(f"http://127.0.0.1:{ui}/graphql", deadline=time.monotonic() + 120) >= {
            "SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR"}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    for port in (ui, reports):  # both stopped
        with pytest.raises(OSError):
            _get(f"http://127.0.0.1:{port}/")


def test_cairn_ui_with_the_report_port_taken_names_the_report_servers_setting(tmp_path: Path) -> None:
    """In `cairn ui`, --port is the Dagster UI's: the advice must name --reports-url, not --port."""
    import socket

    from tests.support.webserver import REPO, WEBSERVER

    if not WEBSERVER.exists():
        pytest.skip(f"dagster-webserver not installed at {WEBSERVER}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([str(Path(sys.executable).parent / "cairn"), "ui", "--home", str(tmp_path / "home"),
                              "--port", str(free_port()), "--reports-url", f"http://127.0.0.1:{port}"], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "cannot serve reports" in run.stderr and "--reports-url http://127.0.0.1:PORT" in run.stderr
    assert "the Dagster UI's" in run.stderr


def _daemons_healthy(graphql: str, *, deadline: float) -> set[str]:
    """The daemon types the Dagster UI reports healthy, once every required one is (or at the deadline)."""
    import time
    import urllib.request

    query = json.dumps({"query": "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"})
    healthy: set[str] = set()
    while time.monotonic() < deadline:
        request = urllib.request.Request(graphql, data=query.encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            statuses = json.load(answer)["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
        healthy = {s["daemonType"] for s in statuses if s["healthy"]}
        if all(s["healthy"] for s in statuses if s["required"]):
            return healthy
        time.sleep(2)
    return healthy


def test_the_index_shows_a_release_revoked_as_soon_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from integrity.release.revocation import revoke
    from integrity.trust.methods.key import KeySigner
    from tests.support.distribution import make_release_key, write_release_policy, write_test_bundle

    for name in ("CAIRN_STORE", "CAIRN_REVOCATIONS", "CAIRN_RELEASE_POLICY", "CAIRN_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    private, public = make_release_key(home / "keys")
    write_release_policy(home / "release-policy.yaml", "digits-classifier", public)
    write_test_bundle(home / "releases" / "digits-classifier-1.0.0", private, weights_size=256)
    store = open_store(home / "store")
    with ReportServer(store, home / "releases", port=0, home=home).running() as server:
        page = _get(f"{server.url}/")[2].decode()
        assert "digits-classifier-1.0.0" in page and "not revoked" in page and "REVOKED" not in page
        revoke(store, KeySigner.from_file(private), "release", "digits-classifier@1.0.0", "gate misconfigured")
        page = _get(f"{server.url}/")[2].decode()
        assert "REVOKED at " in page and "gate misconfigured" in page and "class='revoked'" in page
