"""The report server under attack: someone who may write to the store, a web page in the auditor's browser
and a slow client, each against a real server on 127.0.0.1 over a real Cairn home (real keys, real files,
real symlinks, FIFOs and hard links). Every refusal is checked to leak neither a secret nor a path."""

import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrity.distribution.reports import ReportServer
from integrity.storage import open_store
from integrity.trust.signing import generate_key_pair
from tests.support.s3server import S3Bucket, s3_bucket, s3_server  # noqa: F401

RECORD = "records/verifications/digits-0001.json"
DOCS = "reports/data-docs/digits/index.html"
BLOB = "trusted/blobs/ab/abcd"
TRUSTED = b"attested bytes TRUSTED-COPY"
RELEASE = "digits-classifier-1.0.0"
PEM = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "keys").mkdir(parents=True)
    generate_key_pair(home / "keys" / "release.key", home / "keys" / "release.pub")
    generate_key_pair(home / "keys" / "ledger.key", home / "keys" / "ledger.pub")
    store = open_store(str(home / "store"))
    store.write_key(RECORD, json.dumps({"source": "digits", "passed": True}).encode())
    store.write_key(DOCS, b"<html><body>Data Docs: digits</body></html>")
    store.write_key(BLOB, TRUSTED)
    release = home / "releases" / RELEASE
    release.mkdir(parents=True)
    (release / "release.json").write_text(json.dumps({"model": "digits-classifier"}))
    (release / "lineage.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><text>lineage</text></svg>")
    return home


@contextmanager
def serving(home: Path, releases: Path | None = None, **options: Any) -> Iterator[int]:
    server = ReportServer(open_store(str(home / "store")), releases or home / "releases", port=0, home=home,
                          **options)
    with server.running():
        yield int(server.url.rsplit(":", 1)[1])


def raw(port: int, request: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client normalises them) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def get(port: int, target: str, *, host: str | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request, its Host header the server's own address unless ``host`` says otherwise."""
    host_line = f"Host: {f'127.0.0.1:{port}' if host is None else host}\r\n"
    return raw(port, f"{method} {target} HTTP/1.1\r\n{host_line}Connection: close\r\n\r\n".encode("latin-1"))


def assert_clean(body: bytes, home: Path) -> None:
    """An answer that carries no secret and no filesystem path."""
    for leak in (b"PRIVATE KEY", b"TRUSTED-COPY", str(home).encode(), str(home.parent).encode(), b"/tmp/"):
        assert leak not in body, (leak, body)


# -- (a) someone who may write to the store ----------------------------------------------------------------


@pytest.mark.parametrize("area", ["records", "reports"])
@pytest.mark.parametrize("target", ["keys/release.key", "keys/ledger.key", f"store/{BLOB}"])
def test_a_symlink_planted_in_a_served_area_is_refused(home: Path, area: str, target: str) -> None:
    planted = home / "store" / area / "planted.json"
    planted.symlink_to(home / target)
    with serving(home) as port:
        status, _, body = get(port, f"/store/{area}/planted.json")
        head_status, _, head_body = get(port, f"/store/{area}/planted.json", method="HEAD")
    assert status == 403 and b"symbolic link" in body, body
    assert head_status == 403 and head_body == b""
    assert_clean(body, home)


def test_a_symlinked_folder_in_the_middle_of_the_path_is_refused(home: Path) -> None:
    (home / "store" / "reports" / "data-docs" / "evil").symlink_to(home / "store" / "trusted")
    (home / "store" / "ledger").symlink_to(home / "keys", target_is_directory=True)
    with serving(home) as port:
        for target in ("/store/reports/data-docs/evil/blobs/ab/abcd", "/store/ledger/release.pub"):
            status, _, body = get(port, target)
            assert status == 403 and b"symbolic link" in body, (target, body)
            assert_clean(body, home)
        assert get(port, f"/store/{RECORD}")[0] == 200  # the real files still are served


def test_a_hard_link_to_a_trusted_copy_or_a_key_is_refused(home: Path) -> None:
    store = home / "store"
    os.link(store / BLOB, store / "records" / "blob.json")
    os.link(home / "keys" / "release.key", store / "records" / "key.json")
    with serving(home) as port:
        for name in ("blob.json", "key.json"):
            status, _, body = get(port, f"/store/records/{name}")
            assert status == 403 and b"hard links" in body, body
            assert_clean(body, home)


def test_a_private_key_under_an_innocent_name_is_refused_by_its_content(home: Path) -> None:
    store = open_store(str(home / "store"))
    store.write_key("records/verifications/copied.json", (home / "keys" / "ledger.key").read_bytes())
    store.write_key("reports/data-docs/digits/id_rsa", b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNz\n")
    with serving(home) as port:
        for target in ("/store/records/verifications/copied.json", "/store/reports/data-docs/digits/id_rsa"):
            status, _, body = get(port, target)
            assert status == 403 and b"private key" in body, body
            assert_clean(body, home)


def test_a_fifo_or_socket_in_a_served_area_is_refused_without_hanging(home: Path) -> None:
    os.mkfifo(home / "store" / "records" / "fifo.json")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(home / "store" / "reports" / "sock.html"))
    started = time.monotonic()
    with serving(home) as port:
        for target in ("/store/records/fifo.json", "/store/reports/sock.html"):
            status, _, body = get(port, target)
            assert status == 403 and b"not a regular file" in body, body
    listener.close()
    assert time.monotonic() - started < 5  # opening the FIFO never blocked a worker


def test_a_huge_file_is_streamed_and_a_key_hidden_in_it_is_never_sent(home: Path) -> None:
    big = home / "store" / "reports" / "big.bin"
    with big.open("wb") as out:
        out.truncate(20 << 20)  # sparse: 20 MiB of zeros, over the whole-read limit
    hidden = home / "store" / "reports" / "hidden.bin"
    hidden.write_bytes(b"\0" * (12 << 20) + PEM + b"\0" * 1024)
    with serving(home) as port:
        status, headers, body = get(port, "/store/reports/big.bin", method="HEAD")
        assert (status, headers["content-length"], body) == (200, str(20 << 20), b"")
        status, headers, body = get(port, "/store/reports/big.bin")
        assert status == 200 and len(body) == 20 << 20 and "sandbox" in headers["content-security-policy"]
        status, headers, body = get(port, "/store/reports/hidden.bin")
        assert status == 200 and len(body) < int(headers["content-length"])  # cut short before the key
        assert b"PRIVATE KEY" not in body and b"MIGHAgEA" not in body


def test_releases_folder_set_to_the_home_never_serves_keys_store_or_tmp(home: Path) -> None:
    (home / "tmp").mkdir()
    (home / "tmp" / "release.json").write_text("{}")
    bundle = home / "releases" / RELEASE
    (bundle / "signer.pem").write_bytes(PEM)  # a key copied into a real bundle is refused by its content
    (bundle / "escape.svg").symlink_to(home / "keys" / "release.key")
    with serving(home, releases=home) as port:
        for target in ("/releases/keys/release.key", "/releases/keys/ledger.key", "/releases/keys/release.pub",
                       f"/releases/store/{BLOB}", "/releases/tmp/release.json", "/releases/KEYS/release.pub"):
            status, _, body = get(port, target)
            assert status == 403, (target, status, body)
            assert_clean(body, home)
        status, _, body = get(port, "/")
        assert status == 200 and not any(f"<li>{name}".encode() in body for name in ("keys", "store", "tmp"))
    with serving(home) as port:  # the usual releases folder: a bundle's file, not its planted key or link
        assert get(port, f"/releases/{RELEASE}/release.json")[0] == 200
        for name in ("signer.pem", "escape.svg"):
            status, _, body = get(port, f"/releases/{RELEASE}/{name}")
            assert status == 403, (name, body)
            assert_clean(body, home)


def test_a_release_folder_must_be_a_real_bundle(home: Path) -> None:
    (home / "releases" / "linked-1.0").symlink_to(home / "releases" / RELEASE)
    (home / "releases" / "not-a-bundle").mkdir()
    (home / "releases" / "not-a-bundle" / "notes.txt").write_text("x")
    with serving(home) as port:
        assert get(port, "/releases/linked-1.0/release.json")[0] == 403
        assert get(port, "/audit/linked-1.0")[0] == 403
        status, _, body = get(port, "/releases/not-a-bundle/notes.txt")
        assert status == 404 and b"no release" in body
        assert_clean(body, home)
    with serving(home, releases=home / "keys") as port:  # a releases folder inside the keys is never served
        status, _, body = get(port, "/releases/x/release.pub")
        assert status == 403
        assert_clean(body, home)


@pytest.mark.parametrize("target", [
    "/store/records/../trusted/blobs/ab/abcd", "/store/records/%2e%2e/trusted/blobs/ab/abcd",
    "/store/records/%2E%2E/%2E%2E/keys/release.key", f"/releases/{RELEASE}/..%2f..%2fkeys%2frelease.key",
    "/store/records%2f..%2ftrusted/blobs/ab/abcd", "/store/records/x%00.json", "/store/records/%00",
    f"/releases/{RELEASE}/..%5c..%5ckeys%5crelease.key", f"/releases/{RELEASE}/..\\..\\keys\\release.key",
    "/store/records/%252e%252e/trusted/blobs/ab/abcd", "/store/records/%zz", "/store/records/%ff%fe",
    "/store/records/" + "a" * 3000, "/store/records/" + "b" * 300, "/store/records" + "/c" * 40,
    "/store/records/.hidden", "/store/records/a%0d%0aX-Injected:%20yes", "http://evil.example/store/" + RECORD,
    "*", "/store/trusted/blobs/ab/abcd?/records/x", "/store/records/keys/x.json", "/store/tmp/x",
])
def test_traversal_encoding_and_malformed_targets_are_refused(home: Path, target: str) -> None:
    with serving(home) as port:
        status, headers, body = get(port, target)
    assert status == 403, (target, status, body)
    assert "x-injected" not in headers and headers["content-type"].startswith("text/plain")
    assert_clean(body, home)


def test_a_query_string_is_ignored_and_not_found_says_no_path(home: Path) -> None:
    with serving(home) as port:
        status, _, body = get(port, f"/store/{RECORD}?x=../../keys/release.key")
        assert status == 200 and json.loads(body)["passed"] is True
        for target in ("/store/records/missing.json", "/releases/nope/release.json", "/anything",
                       f"/releases/{RELEASE}/missing.svg"):
            status, _, body = get(port, target)
            assert status == 404 and body.startswith(b"404 not found: "), (target, body)
            assert_clean(body, home)


def test_a_remote_store_applies_the_same_allowlist(home: Path, s3_bucket: S3Bucket) -> None:  # noqa: F811
    store = open_store(f"s3://{s3_bucket.name}/cairn")
    store.write_key(RECORD, b'{"ok": true}')
    store.write_key(BLOB, TRUSTED)
    store.write_key("records/keys/x.json", b"{}")
    store.write_key("records/copied.json", PEM)
    server = ReportServer(store, home / "releases", port=0)
    with server.running():
        port = int(server.url.rsplit(":", 1)[1])
        assert get(port, f"/store/{RECORD}")[0] == 200
        for target in (f"/store/{BLOB}", "/store/tmp/x", "/store/records/keys/x.json", "/store/records/copied.json",
                       "/store/records/%2e%2e/trusted/blobs/ab/abcd"):
            status, _, body = get(port, target)
            assert status == 403, (target, body)
            assert_clean(body, home)


# -- (b) a web page in the auditor's browser ----------------------------------------------------------------


def test_a_rebound_host_name_is_refused_and_the_server_own_names_work(home: Path) -> None:
    with serving(home) as port:
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", "127.0.0.1", f"[::1]:{port}",
                     f"LOCALHOST:{port}"):
            assert get(port, f"/store/{RECORD}", host=host)[0] == 200, host
        for host in ("rebind.attacker.example", f"rebind.attacker.example:{port}", f"127.0.0.1.nip.io:{port}",
                     f"127.0.0.1%3a{port}", f"localhost:{port}.attacker.example", f"evil@127.0.0.1:{port}",
                     f"[0:0:0:0:0:0:0:1]:{port}", "", f"127.0.0.1:{port + 1}"):
            status, headers, body = get(port, f"/store/{RECORD}", host=host)
            assert status == 421 and b"DNS rebinding" in body, (host, status)
            assert b"passed" not in body and "nosniff" in headers["x-content-type-options"]
        assert raw(port, f"GET /store/{RECORD} HTTP/1.0\r\n\r\n".encode())[0] == 421  # no Host header at all
        request = f"GET /store/{RECORD} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n\r\n"
        assert raw(port, request.encode())[0] == 421  # two Host headers
        request = f"GET http://evil.example/store/{RECORD} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        assert raw(port, request.encode())[0] == 403  # an absolute-form target names another host


def test_the_public_url_host_is_answered(home: Path) -> None:
    with serving(home, public_url="http://reports.example.internal:8443") as port:
        assert get(port, f"/store/{RECORD}", host="reports.example.internal:8443")[0] == 200
        assert get(port, f"/store/{RECORD}", host=f"reports.example.internal:{port}")[0] == 200
        assert get(port, f"/store/{RECORD}", host="other.example.internal:8443")[0] == 421


def test_every_response_carries_the_security_headers(home: Path) -> None:
    with serving(home) as port:
        answers = {
            200: get(port, f"/store/{RECORD}"), 403: get(port, f"/store/{BLOB}"), 404: get(port, "/nothing"),
            405: get(port, f"/store/{RECORD}", method="POST"), 421: get(port, "/", host="evil.example"),
            400: raw(port, b"GARBAGE\r\n\r\n"), 501: get(port, "/", method="BREW"),
        }
        http09 = raw(port, b"GET /\r\n\r\n")  # an HTTP/0.9 request would get an answer without any header
    assert http09[0] == 400
    for expected, (status, headers, body) in [*answers.items(), (400, http09)]:
        assert status == expected, (expected, status, body)
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer" and headers["x-frame-options"] == "DENY"
        policy = headers["content-security-policy"]
        assert "script-src 'none'" in policy and "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
        assert "python" not in headers.get("server", "").lower()
        assert_clean(body, home)
    assert answers[405][1]["allow"] == "GET, HEAD"
    assert "sandbox" in answers[200][1]["content-security-policy"]  # a served file runs in a sandbox


def test_data_docs_with_vendor_script_are_served_so_it_cannot_run(home: Path) -> None:
    attack = (b"<html><body><h1>Data Docs</h1><table><tr><th><img src=x onerror=\"fetch('/beacon-onerror')\">"
              b"</th></tr></table><script>fetch('/beacon-script'); document.title = 'PWNED'</script></body></html>")
    open_store(str(home / "store")).write_key("reports/data-docs/digits/validations/run.html", attack)
    with serving(home) as port:
        status, headers, body = get(port, "/store/reports/data-docs/digits/validations/run.html")
        assert status == 200 and body == attack and headers["content-type"].startswith("text/html")
        policy = [p.strip() for p in headers["content-security-policy"].split(";")]
        assert "sandbox" in policy and "script-src 'none'" in policy and "default-src 'none'" in policy
        status, headers, _ = get(port, f"/releases/{RELEASE}/lineage.svg")
        assert status == 200 and "sandbox" in headers["content-security-policy"]


def test_a_real_browser_never_runs_the_script_of_served_data_docs(home: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is part of the test extra")
    attack = (b"<html><head><title>docs</title></head><body><p>Data Docs</p>"
              b"<img src=x onerror=\"new Image().src='/beacon-onerror'\">"
              b"<script>new Image().src = '/beacon-script'; document.title = 'PWNED'</script></body></html>")
    open_store(str(home / "store")).write_key("reports/data-docs/digits/validations/run.html", attack)
    caplog.set_level(logging.INFO, logger="integrity.distribution.reports")
    with serving(home) as port, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium),
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/store/reports/data-docs/digits/validations/run.html")
            page.wait_for_timeout(1500)
            assert page.title() == "docs" and "Data Docs" in page.inner_text("body")  # read, never run
            page.goto(f"http://127.0.0.1:{port}/store/{RECORD}")  # the auditor still reads a record as text
            assert json.loads(page.inner_text("body"))["passed"] is True
        finally:
            browser.close()
    requested = caplog.text
    assert "run.html" in requested and "/beacon" not in requested


# -- (c) a slow connection ----------------------------------------------------------------------------------


def _closed_within(sock: socket.socket, seconds: float, drip: bytes = b"") -> float | None:
    """Seconds until the server closes ``sock`` (sending ``drip`` a byte at a time meanwhile), else None."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if drip:
            byte, drip = drip[:1], drip[1:]
            try:
                sock.sendall(byte)
            except OSError:
                return time.monotonic() - started
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            try:
                data = sock.recv(65536)
            except OSError:
                return time.monotonic() - started
            if not data:
                return time.monotonic() - started
    return None


def test_a_slow_client_blocks_nobody_and_is_dropped_after_the_timeout(home: Path) -> None:
    with serving(home, timeout=1.0) as port:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /store/rec")  # half a request line, then nothing
        started = time.monotonic()
        assert get(port, f"/store/{RECORD}")[0] == 200
        assert time.monotonic() - started < 1.0  # answered while the slow client still holds its thread
        dropped = _closed_within(slow, 5)
        slow.close()
    assert dropped is not None and 0.5 < dropped < 3, dropped


def test_a_client_dripping_one_byte_at_a_time_is_dropped_at_the_deadline(home: Path) -> None:
    with serving(home, timeout=1.0) as port:
        slow = socket.create_connection(("127.0.0.1", port))
        drip = b"GET /store/" + RECORD.encode() + b" HTTP/1.1\r\nX-Pad: " + b"a" * 200
        dropped = _closed_within(slow, 6, drip)  # one byte every 0.2 s: each recv is well within 1 s
        slow.close()
    assert dropped is not None and dropped < 3, dropped


def test_slow_connections_beyond_the_pool_get_503_and_never_block_forever(home: Path) -> None:
    with serving(home, timeout=1.5, workers=3) as port:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
        for sock in slow:
            sock.sendall(b"GET /sto")
        time.sleep(0.3)
        started = time.monotonic()
        status, headers, body = get(port, f"/store/{RECORD}")
        assert status == 503 and time.monotonic() - started < 1.0, (status, body)
        assert headers["x-content-type-options"] == "nosniff" and "script-src 'none'" in headers[
            "content-security-policy"]
        answers = []
        for sock in slow:
            sock.settimeout(5)
            answers.append(sock.recv(100))
            sock.close()
        assert sum(a.startswith(b"HTTP/1.0 503") for a in answers) >= 5  # refused at once, not queued
        deadline = time.monotonic() + 5
        while (status := get(port, f"/store/{RECORD}")[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200  # the slots came back once the slow ones timed out


def test_many_concurrent_clients_are_all_answered(home: Path) -> None:
    results: list[int] = []
    with serving(home, workers=4) as port:
        def fetch() -> None:
            for _ in range(5):
                status = get(port, f"/store/{RECORD}")[0]
                while status == 503:
                    time.sleep(0.05)
                    status = get(port, f"/store/{RECORD}")[0]
                results.append(status)
        threads = [threading.Thread(target=fetch) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert results == [200] * 60


# -- the fuzz entry points: pure functions that raise only LookupError / PermissionError ---------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.lists(st.sampled_from(["/", "..", ".", "%2e", "%2f", "%5c", "%00", "%25", "a", "keys", "?",
                                           "#", "\\", "%", "%e2%80%ae"]), max_size=12).map("".join)))
def test_parse_target_refuses_or_returns_safe_parts(target: str | bytes) -> None:
    from integrity.distribution.serving import parse_target

    try:
        parts = parse_target(target)
    except PermissionError as refused:
        assert "/" not in str(refused).split(":", 1)[-1].replace("'/'", "")
        return
    for part in parts:
        assert part not in (".", "..") and not part.startswith(".")
        assert not any(c in part for c in "/\\\x00%") and part.isprintable()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.one_of(st.sampled_from(["link", "dir", "file", "ok", "fifo", "..", ".", "",
                                                 "dir/ok", "hard", "missing", "\x00", "sub"]), st.text(max_size=20)),
                      max_size=5))
def test_open_beneath_serves_only_regular_files_below_its_root(tmp_path_factory: pytest.TempPathFactory,
                                                               parts: list[str]) -> None:
    from integrity.distribution.serving import open_beneath

    root = tmp_path_factory.getbasetemp() / "beneath"
    if not root.exists():
        outside = tmp_path_factory.getbasetemp() / "outside-secret"
        outside.write_text("secret")
        (root / "dir" / "sub").mkdir(parents=True)
        (root / "dir" / "file").write_text("inside")
        (root / "file").write_text("inside")
        (root / "ok").write_text("inside")
        (root / "dir" / "ok").write_text("inside")
        (root / "link").symlink_to(outside)
        (root / "dir" / "link").symlink_to(root / "dir", target_is_directory=True)
        os.mkfifo(root / "fifo")
        os.link(root / "file", root / "hard")
        os.link(root / "dir" / "file", outside.with_name("outside-hard"))
    try:
        with open_beneath(root, parts) as handle:
            assert handle.read() == b"inside"
    except (LookupError, PermissionError):
        pass
