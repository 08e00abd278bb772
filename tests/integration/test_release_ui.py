"""The auditor's view: the real Dagster webserver (loopback) in headless Debian Chromium shows the release
asset with its lineage table and the signer identity; the screenshot is kept in test-artifacts/."""

from pathlib import Path

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
           "CAIRN_RELEASE_SPEC": str(demo.spec)}
    with running_webserver(env, tmp_path_factory.mktemp("webserver") / "webserver.log") as port:
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
