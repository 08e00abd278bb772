"""The auditor's view: the real Dagster webserver (loopback) and Cairn's report server beside it, in
headless Debian Chromium. From rendered pages only, an auditor answers what went into the release, who
signed each input under which policy rule, which gates passed with which figures, and what was rejected
and why; screenshots of each are kept in test-artifacts/ (README *The auditor's view* tells their story)."""

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.release_demo import ReleaseDemo, shared_release_demo
from tests.support.webserver import REPO, WEBSERVER, running_webserver

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def served_release(tmp_path_factory: pytest.TempPathFactory):
    if not WEBSERVER.exists():
        pytest.skip(f"dagster-webserver not installed at {WEBSERVER}")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (scripts/bootstrap.sh --test installs it)")
    pytest.importorskip("playwright.sync_api", reason="playwright is part of the test extra")
    demo: ReleaseDemo = shared_release_demo(tmp_path_factory)
    assert demo.returncode == 0, demo.output[-4000:]
    env = {"CAIRN_HOME": str(demo.home), "DAGSTER_HOME": str(demo.home / "dagster"),
           "CAIRN_RELEASE_SPEC": str(demo.spec), "CAIRN_REPORTS_URL": demo.reports_url}
    from integrity.distribution.reports import ReportServer
    from integrity.storage import open_store

    assert demo.reports_url, "the shared demo pins the report server's URL its links point to"
    reports = ReportServer(open_store(str(demo.home / "store")), demo.home / "releases",
                           port=int(urlsplit(demo.reports_url).port or 0), home=demo.home)
    with reports.running(), running_webserver(env, tmp_path_factory.mktemp("webserver") / "webserver.log") as port:
        yield port, demo


def test_release_asset_shows_lineage_table_and_signer_in_the_ui(served_release) -> None:
    from playwright.sync_api import sync_playwright

    from integrity.trust.signing import key_fingerprint, load_public_key

    port, demo = served_release
    expected_signer = key_fingerprint(load_public_key(demo.home / "keys" / "release.pub"))  # the release identity
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            # The UI's one-time community prompt would cover the page: mark it as seen, as a returning user.
            page.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
            page.goto(f"http://127.0.0.1:{port}/assets/digits_classifier/released", timeout=180_000)
            page.get_by_text("signer_identity").first.wait_for(timeout=180_000)
            page.wait_for_load_state("networkidle")
            skip = page.get_by_role("button", name="Skip")
            if skip.count():
                skip.first.click()
            body = page.inner_text("body")
            assert f"key {expected_signer}" in body  # the signer identity, as the release asset reports it
            assert "verification_record/digits" in body and "records/verifications/digits-" in body
            assert "file://" not in body  # every link is HTTP
            page.screenshot(path=str(ARTIFACTS / "release-asset.png"), full_page=True)
            row = page.locator("tr", has_text="lineage").filter(has_text="[Show Markdown]")
            row.get_by_text("[Show Markdown]").first.click()  # the lineage table opens in a dialog
            dialog = page.get_by_role("dialog")
            dialog.wait_for(timeout=30_000)
            page.wait_for_timeout(800)  # let the dialog finish fading in before the screenshot
            table = dialog.inner_text()
            assert "derived from" in table
            for node in ("source:digits", "verification:digits", "attestation:efficientnet-lite0",
                         "conversion:efficientnet-lite0:0", "release:digits-classifier@"):
                assert node in table, node
            assert dialog.locator("table").count() == 1  # rendered as a table, not raw markdown
            page.screenshot(path=str(ARTIFACTS / "release-lineage.png"))
        finally:
            browser.close()
    assert (ARTIFACTS / "release-lineage.png").stat().st_size > 10_000


def _launch(playwright):  # type: ignore[no-untyped-def]
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])


def _open(page, url: str, wait_for: str) -> str:  # type: ignore[no-untyped-def]
    """Open a page, wait until ``wait_for`` is rendered, and return the page's rendered text."""
    page.goto(url, timeout=180_000)
    page.get_by_text(wait_for).first.wait_for(timeout=180_000)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()
    text: str = page.inner_text("body")
    return text


def _latest_check(page, port: int, asset: str, wait_for: str) -> str:  # type: ignore[no-untyped-def]
    """The rendered checks tab of an asset: its latest check execution, description and metadata."""
    return _open(page, f"http://127.0.0.1:{port}/assets/{asset}?view=checks", wait_for)


def test_an_auditor_answers_the_four_questions_from_rendered_pages(served_release) -> None:
    """What went into the release; who signed each input under which rule; which gates passed with which
    figures; what was rejected and why. Only rendered text (and the links it shows) is read."""
    from playwright.sync_api import sync_playwright

    port, demo = served_release
    ARTIFACTS.mkdir(exist_ok=True)
    shots = []
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")

            # 1. What went into the release, and 2. who signed each input under which policy rule.
            body = _open(page, f"http://127.0.0.1:{port}/assets/digits_classifier/released", "signer_identity")
            assert "file://" not in body
            row = page.locator("tr", has_text="inputs").filter(has_text="[Show Markdown]")
            row.get_by_text("[Show Markdown]").first.click()
            dialog = page.get_by_role("dialog")
            dialog.wait_for(timeout=30_000)
            page.wait_for_timeout(800)
            inputs = dialog.inner_text()
            rows = {line.split("\t")[0]: line for line in inputs.splitlines() if "\t" in line}
            assert set(rows) >= {"digits/screened", "efficientnet-lite0/backdoor_scanned"}, inputs
            assert "training-data" in rows["digits/screened"] and "base-model" in rows[
                "efficientnet-lite0/backdoor_scanned"]
            # The digits publisher signs keyless-style with a CA-pinned certificate; the backbone's with a key.
            assert re.search(r"certificate releases@digits-vendor\.example .*matched signers\[\d+\] certificate "
                             r"identity=releases@digits-vendor\.example ca=sha256:[0-9a-f]{64} of policy v\d+ "
                             r"sha256:[0-9a-f]{64}", rows["digits/screened"]), rows["digits/screened"]
            assert re.search(r"key sha256:[0-9a-f]{64}; matched signers\[\d+\] key sha256:[0-9a-f]{64} of policy",
                             rows["efficientnet-lite0/backdoor_scanned"])
            page.screenshot(path=str(ARTIFACTS / "auditor-1-inputs-and-signers.png"))
            shots.append("auditor-1-inputs-and-signers.png")
            # The verification record the table links to is served over HTTP and names the same rule.
            record_url = dialog.locator("a[href*='/store/records/verifications/digits-']").first.get_attribute("href")
            assert record_url and record_url.startswith(demo.reports_url)
            page.keyboard.press("Escape")
            record_page = browser.new_page(viewport={"width": 1200, "height": 900})
            record_page.goto(record_url)
            record = json.loads(record_page.inner_text("body"))
            predicate = record["predicate"]
            assert predicate["result"] == "passed" and predicate["rule"].startswith("signers[0] certificate identity=")
            assert predicate["signer"]["identity"] == "releases@digits-vendor.example"
            record_page.screenshot(path=str(ARTIFACTS / "auditor-2-verification-record.png"))
            shots.append("auditor-2-verification-record.png")

            # 3. Which gates passed, with which figures: the release gate, then each input's own gate.
            gate = _latest_check(page, port, "digits_classifier/evaluated", "Latest execution")
            assert "digits-classifier passed the release gate: clean accuracy" in gate
            for measure in ("clean accuracy", "attack success of trigger", "FGSM accuracy eps=", "PGD accuracy eps="):
                assert measure in gate, measure
            assert re.search(r"clean accuracy\t0\.\d{4}\t>= 0\.05\tpass", gate), gate[-2000:]
            page.screenshot(path=str(ARTIFACTS / "auditor-3-release-gate.png"), full_page=True)
            shots.append("auditor-3-release-gate.png")
            screen = _latest_check(page, port, "digits/screened", "Latest execution")
            assert re.search(r"digits passed the poisoning screen: \d+/1797 samples flagged \(\d+\.\d%\), within the policy's", screen)
            scan = _latest_check(page, port, "efficientnet_lite0/backdoor_scanned", "Latest execution")
            assert re.search(r"efficientnet-lite0 passed the backdoor scan: .*anomaly index \d\.\d+", scan)
            page.screenshot(path=str(ARTIFACTS / "auditor-3-model-scan.png"), full_page=True)
            shots.append("auditor-3-model-scan.png")
            verified = _latest_check(page, port, "digits/verified", "Latest execution")
            assert "digits passed signature verification" in verified

            # 4. What was rejected, and why: one sentence each, never a stack trace.
            for asset, sentence, shot in (
                ("digits_vendor_b/screened", "digits-vendor-b was rejected at the poisoning screen: backdoor "
                                             "signature in class(es) 0", "auditor-4-rejected-poisoned.png"),
                ("breast_cancer_mirror/verified", "breast-cancer-mirror was rejected at signature verification: "
                                                  "content differs from what was signed",
                 "auditor-4-rejected-tampered.png"),
                ("digits_unofficial/verified", "digits-unofficial was rejected at signature verification: signed "
                                               "by a key the policy does not list", None),
                ("breast_cancer_export/validated", "breast-cancer-export was rejected at validation: type_drift",
                 None),
            ):
                text = _latest_check(page, port, asset, "Latest execution")
                assert sentence in text, (asset, text[-1500:])
                line = next(line for line in text.splitlines() if line.startswith(sentence.split(":")[0]))
                assert len(line) <= 300 and "Traceback" not in text, line
                if shot:
                    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
                    shots.append(shot)

            # The audit report the release asset links to runs `cairn audit` and is served over HTTP.
            _open(page, f"http://127.0.0.1:{port}/assets/digits_classifier/released", "signer_identity")
            audit_url = page.locator(f"a[href^='{demo.reports_url}/audit/']").first.get_attribute("href")
            assert audit_url
            page.goto(audit_url)
            audit = page.inner_text("body")
            assert "AUDIT PASSED" in audit and "matched signers[0]" in audit
            page.screenshot(path=str(ARTIFACTS / "auditor-5-audit-report.png"), full_page=True)
            shots.append("auditor-5-audit-report.png")

            # Data Docs of a validated input: a link from the asset, served over HTTP too.
            _open(page, f"http://127.0.0.1:{port}/assets/breast_cancer/validated", "data_docs")
            docs = page.locator(f"a[href^='{demo.reports_url}/store/reports/data-docs/breast_cancer/validations/']")
            docs_url = docs.first.get_attribute("href")
            assert docs_url
            page.goto(docs_url)
            validation = page.inner_text("body")
            assert "breast_cancer" in validation and "Succeeded" in validation, validation[:2000]
            page.screenshot(path=str(ARTIFACTS / "auditor-6-data-docs.png"))
            shots.append("auditor-6-data-docs.png")
        finally:
            browser.close()
    for shot in shots:
        assert (ARTIFACTS / shot).stat().st_size > 5_000, shot
