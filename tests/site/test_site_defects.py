"""The site checks fail on seeded defects, and name them (`make site-test`).

Each case copies the built site (hard links, so it is fast; a changed file is written anew,
never through the link), seeds one defect in one page, as a broken build or a broken notebook
would leave it, and runs sitecheck.check_page on that page: the check must report the defect,
naming the page and the item. The untouched pages pass in test_site_pages.py, so each defect
is what makes the difference.
"""

import os
import re
import shutil

import pytest

pytest.importorskip("playwright.sync_api", reason="Playwright is in the site's venv only: "
                    "run `make site-test` (scripts/site.sh test)")

import sitecheck  # noqa: E402


def _copy(tmp_path):
    if not (sitecheck.SITE / "index.html").is_file():
        pytest.fail(f"no {sitecheck.SITE}/index.html: run `make site` first", pytrace=False)
    site = tmp_path / "site"
    shutil.copytree(sitecheck.SITE, site, copy_function=os.link)
    return site


def _insert(site, page, html):
    """Insert `html` after the title of the page's article; a new file, not the hard link."""
    path = site / page
    text = path.read_text(encoding="utf-8")
    at = text.index("</h1>", text.index('<article class="bd-article"')) + len("</h1>")
    path.unlink()
    path.write_text(text[:at] + "\n" + html + text[at:], encoding="utf-8")


def _lesson_with_a_figure():
    for page in sitecheck.pages():
        if page.startswith("notebooks/"):
            found = re.search(r'<img[^>]*src="(\.\./_images/[^"]+)"',
                              (sitecheck.SITE / page).read_text(encoding="utf-8"))
            if found:
                return page, found.group(1)
    pytest.fail("no lesson page shows a figure")


def _check(context, site, page):
    url, server = sitecheck.serve(site)
    try:
        return sitecheck.check_page(context, site, url, page)
    finally:
        server.shutdown()


def _reported(problems, *words):
    return [p for p in problems if all(w in p for w in words)]


def test_a_deleted_image_is_reported(context, tmp_path):
    site = _copy(tmp_path)
    page, src = _lesson_with_a_figure()
    (site / page).parent.joinpath(src).resolve().unlink()
    problems = _check(context, site, page)
    assert _reported(problems, page, "image not loaded", src), problems


@pytest.mark.parametrize("href, words", [
    ("notebooks/no_such_lesson.html", ["broken link", "no_such_lesson.html"]),
    ("index.html#no-such-section", ["broken link", "no #no-such-section"]),
])
def test_a_broken_link_is_reported(context, tmp_path, href, words):
    site = _copy(tmp_path)
    _insert(site, "index.html", f'<p><a href="{href}">a link</a></p>')
    problems = _check(context, site, "index.html")
    assert _reported(problems, "index.html", *words), problems


@pytest.mark.parametrize("html, words", [
    # dollar math that was not parsed, left as text in the page
    ("<p>The inertia is $$\\sum_i \\|w_i - \\mu_{c(i)}\\|^2$$ here.</p>",
     ["untypeset formula", "$$"]),
    ("<p>Inline \\(k \\le n\\) left raw.</p>", ["untypeset formula", "\\("]),
    # formulas MathJax cannot typeset: an error box, a macro it does not know (in red)
    ('<span class="math notranslate nohighlight">\\(x^{1}}\\)</span>',
     ["MathJax error", "Extra close brace"]),
    ('<span class="math notranslate nohighlight">\\(\\nosuchmacro{x}\\)</span>',
     ["MathJax error", "undefined \\nosuchmacro"]),
])
def test_an_untypeset_formula_is_reported(context, tmp_path, html, words):
    site = _copy(tmp_path)
    page = _lesson_with_a_figure()[0]
    _insert(site, page, html)
    problems = _check(context, site, page)
    assert _reported(problems, page, *words), problems


def test_formulas_without_mathjax_are_reported(context, tmp_path):
    """A page whose MathJax script is missing shows its formulas as TeX: each is reported."""
    site = _copy(tmp_path)
    page = _lesson_with_a_figure()[0]
    path = site / page
    text = path.read_text(encoding="utf-8")
    script = re.search(r'<script[^>]*src="[^"]*mathjax/tex-mml-chtml\.js[^"]*"[^>]*></script>',
                       text)
    assert script, f"no MathJax script in {page}"
    path.unlink()
    path.write_text(text.replace(script.group(0), ""), encoding="utf-8")
    problems = _check(context, site, page)
    assert _reported(problems, page, "formula not typeset"), problems


@pytest.mark.parametrize("html, words", [
    ('<img alt="badge" src="https://colab.research.google.com/assets/colab-badge.svg">',
     ["request to another host (blocked)", "colab.research.google.com"]),
    ("<script>console.error('seeded error')</script>", ["console error", "seeded error"]),
    ('<div style="width: 3000px">a wide block</div>', ["horizontal scroll"]),
    ('<img alt="wide" src="../_images/{src}" style="max-width: none; width: 1500px">',
     ["image wider than the content column"]),
    ('<div class="math notranslate nohighlight">\\[' + " + ".join(f"x_{{{i}}}" for i in range(80))
     + "\\]</div>", ["formula wider than the content column", "x_{0}"]),
])
def test_other_defects_are_reported(context, tmp_path, html, words):
    site = _copy(tmp_path)
    page, src = _lesson_with_a_figure()
    _insert(site, page, html.replace("../_images/{src}", src))
    problems = _check(context, site, page)
    assert _reported(problems, page, *words), problems
