"""Fixtures of the website tests: Chromium through Playwright, and the site served locally.

These tests run in the site's virtual environment (`make site-test`, scripts/site.sh test),
which has Playwright; in the main environment (`pytest tests`) their modules are skipped.
Without Chromium they skip with the reason, except in CI (CI=true), where they fail.
"""

import os
from pathlib import Path

import pytest
import sitecheck


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI=true: the site tests must run in CI)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium (/usr/bin/chromium, or $SITE_CHROMIUM), headless; never downloaded."""
    from playwright.sync_api import sync_playwright

    if not Path(sitecheck.CHROMIUM).is_file():
        _unavailable(f"no Chromium at {sitecheck.CHROMIUM}: `apt-get install chromium` "
                     "(or set SITE_CHROMIUM); never `playwright install`")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=sitecheck.CHROMIUM,
                                    args=sitecheck.LAUNCH_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def context(browser):
    """A 1280x900 window that serves nothing from other hosts' caches or service workers."""
    ctx = browser.new_context(viewport={"width": sitecheck.WIDTH, "height": sitecheck.HEIGHT},
                              service_workers="block")
    yield ctx
    ctx.close()


@pytest.fixture(scope="session")
def site_url():
    """build/site/ served on 127.0.0.1 from a thread."""
    if not (sitecheck.SITE / "index.html").is_file():
        pytest.fail(f"no {sitecheck.SITE}/index.html: run `make site` first", pytrace=False)
    url, server = sitecheck.serve(sitecheck.SITE)
    yield url
    server.shutdown()
