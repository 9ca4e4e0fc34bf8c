"""Every page of the built website, in Chromium (`make site-test`; `make site` builds it).

One test per page runs the checks of sitecheck.check_page (console errors, failed or outside
requests, images, internal links and anchors, typeset formulas, width at 1280 px); the lessons'
screenshots at 1280x900 go to build/site-shots/. Then the site's navigation and search.
"""

import posixpath
import re
from html import unescape
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="Playwright is in the site's venv only: "
                    "run `make site-test` (scripts/site.sh test)")

import sitecheck  # noqa: E402

PAGES = sitecheck.pages() or ["index.html"]  # not built: the site_url fixture says so


@pytest.mark.parametrize("page", PAGES)
def test_page(context, site_url, page):
    shot = None
    if page.startswith("notebooks/"):
        shot = sitecheck.SHOTS / (page.split("/")[-1].removesuffix(".html") + ".png")
    problems = sitecheck.check_page(context, sitecheck.SITE, site_url, page, screenshot=shot)
    assert not problems, "\n".join(problems)


def _footer_link(html: str, side: str) -> str | None:
    """The href of the footer's "previous" (left-prev) or "next" (right-next) link."""
    match = re.search(rf'<a class="{side}"\s+href="([^"]+)"', html)
    return match.group(1) if match else None


def _rel(target: str, page: str) -> str:
    return posixpath.relpath(target, posixpath.dirname(page) or ".")


def test_navigation_runs_through_the_lessons_then_the_study(site_url):
    """The sidebar lists the lessons then the study; previous/next links follow that order."""
    lessons = sorted(p for p in sitecheck.pages() if p.startswith("notebooks/"))
    study = sorted(p for p in sitecheck.pages() if p.startswith("study/"))
    notebooks = Path(__file__).resolve().parents[2] / "notebooks"
    assert len(lessons) == len(list(notebooks.glob("[0-9][0-9]_*.ipynb"))) and study, (lessons,
                                                                                       study)
    order = ["index.html", *lessons, *study]
    if (sitecheck.SITE / "results.html").exists():
        order.append("results.html")
    index = (sitecheck.SITE / "index.html").read_text(encoding="utf-8")
    sidebar = index[index.index("bd-docs-nav"):]
    positions = [sidebar.find(f'href="{p}"') for p in order[1:]]
    where = dict(zip(order[1:], positions, strict=True))
    assert -1 not in positions and positions == sorted(positions), where
    for here, there in zip(order[:-1], order[1:], strict=True):
        html = (sitecheck.SITE / here).read_text(encoding="utf-8")
        assert _footer_link(html, "right-next") == _rel(there, here), (here, "next", there)
        html = (sitecheck.SITE / there).read_text(encoding="utf-8")
        assert _footer_link(html, "left-prev") == _rel(here, there), (there, "previous", here)


def test_search_finds_a_lesson_by_a_word_of_its_title(context, site_url):
    """The offline search index answers a query with the lesson whose title holds the word."""
    lesson = sorted(p for p in sitecheck.pages() if p.startswith("notebooks/"))[-1]
    html = (sitecheck.SITE / lesson).read_text(encoding="utf-8")
    title = unescape(re.search(r"<title>(.*?)</title>", html, re.S).group(1)).split("\u2014")[0]
    word = max(re.findall(r"[A-Za-z]{4,}", title), key=len)
    tab = context.new_page()
    try:
        tab.goto(site_url + f"search.html?q={word}", wait_until="load")
        results = tab.locator("#search-results ul.search li a")
        results.first.wait_for(timeout=sitecheck.TIMEOUT_MS)
        hrefs = [results.nth(i).get_attribute("href") for i in range(results.count())]
    finally:
        tab.close()
    assert any(lesson.removesuffix(".html") in h for h in hrefs), (word, hrefs)
