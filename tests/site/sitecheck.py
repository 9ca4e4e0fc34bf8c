"""Browser checks of the built website (build/site/, `make site`), shared by the site tests.

`check_page` opens one page in Chromium, served from 127.0.0.1, and returns its problems, one
line each, naming the page and what is wrong:

* a console error, an uncaught script error, a failed request or an HTTP error status;
* a request that leaves 127.0.0.1 (blocked: the site must need nothing from outside);
* an image not loaded (`naturalWidth == 0`);
* an internal link to a missing file, or to an `#anchor` its page does not have;
* a formula not typeset: a `.math` element without MathJax output, a MathJax error (a parse
  error, an undefined macro), or raw
  TeX delimiters (`$$`, `\\(`, `\\[`, `\\begin{`) left in the text outside code;
* horizontal scrolling at the window's width, or an image or a displayed formula wider than
  the content column (a formula too wide scrolls in its own box: the reader sees it cut).

Playwright is imported by the caller (the tests skip without it); this module only uses the
objects it is given, so it imports without Playwright.
"""

from __future__ import annotations

import functools
import html.parser
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "build" / "site"
SHOTS = ROOT / "build" / "site-shots"
CHROMIUM = os.environ.get("SITE_CHROMIUM", "/usr/bin/chromium")
# Headless, and no traffic of Chromium's own (updates, sync, field trials) to other hosts.
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WIDTH, HEIGHT = 1280, 900
TIMEOUT_MS = 30_000


def pages(site: Path = SITE) -> list[str]:
    """Every HTML page of the site, as paths relative to its root."""
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if not p.relative_to(site).parts[0].startswith("_"))


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the tests report failed requests themselves
        pass


def serve(site: Path) -> tuple[str, ThreadingHTTPServer]:
    """Serve `site` on 127.0.0.1 (a free port) from a daemon thread; (base URL, server)."""
    handler = functools.partial(_Quiet, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/", server


class _Anchors(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        for name, value in attrs:
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value or "")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    """The ids (and `<a name>`s) of one HTML file."""
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def link_problems(site: Path, base_url: str, page: str, hrefs: list[str]) -> list[str]:
    """Internal links of `page` (absolute URLs) whose file or #anchor does not exist."""
    problems = []
    for href in sorted(set(hrefs)):
        if not href.startswith(base_url):
            continue  # another host (a plain link, never loaded) or mailto:, javascript:
        parts = urlsplit(href)
        path = unquote(parts.path).lstrip("/")
        target = site / path
        if not path or path.endswith("/"):
            target = target / "index.html"
        rel = href[len(base_url):]
        if not target.is_file():
            problems.append(f"{page}: broken link to {rel} (no file {target.relative_to(site)})")
        elif parts.fragment and target.suffix == ".html" \
                and unquote(parts.fragment) not in anchors(target):
            problems.append(f"{page}: broken link to {rel} (no #{parts.fragment} there)")
    return problems


# Runs in the page once it has loaded and MathJax has finished.
_INSPECT = r"""
() => {
  const out = {images: [], math: [], rawTex: [], mathErrors: [], wide: [], wideMath: [],
               hrefs: []};
  for (const img of document.images) {
    if (!img.complete || img.naturalWidth === 0) out.images.push(img.getAttribute('src'));
  }
  for (const el of document.querySelectorAll('.math')) {
    if (!el.querySelector('mjx-container') && el.tagName !== 'MJX-CONTAINER')
      out.math.push(el.textContent.trim().slice(0, 80));
  }
  for (const el of document.querySelectorAll('mjx-merror'))
    out.mathErrors.push((el.getAttribute('data-mjx-error') || el.textContent).slice(0, 80));
  // An undefined macro is typeset as its name in red (MathJax's noundefined extension).
  for (const el of document.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]'))
    if (el.textContent.startsWith('\\')) out.mathErrors.push(`undefined ${el.textContent}`);
  const skip = 'PRE, CODE, SCRIPT, STYLE, TEXTAREA, MJX-CONTAINER, MJX-ASSISTIVE-MML, .highlight';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const raw = /\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\$[^$\s][^$]*\\[a-zA-Z]+[^$]*\$/;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest(skip)) continue;
    const match = node.textContent.match(raw);
    if (match) {
      const at = Math.max(0, match.index - 30);
      out.rawTex.push(node.textContent.slice(at, match.index + 50).replace(/\s+/g, ' '));
    }
  }
  const column = document.querySelector('article.bd-article') || document.querySelector('main');
  if (column) {
    const box = column.getBoundingClientRect();
    for (const img of column.querySelectorAll('img')) {
      const r = img.getBoundingClientRect();
      if (r.width > box.width + 1 || r.right > box.right + 1 || r.left < box.left - 1)
        out.wide.push(`${img.getAttribute('src')} (${Math.round(r.width)} px in a `
                      + `${Math.round(box.width)} px column)`);
    }
  }
  // A displayed formula scrolls inside its own box when too wide: the reader sees it cut.
  const tex = new Map();  // typeset formula -> its TeX source
  for (const item of (window.MathJax?.startup?.document?.math || []))
    tex.set(item.typesetRoot, item.math);
  for (const m of document.querySelectorAll('mjx-container[display="true"]')) {
    const math = m.querySelector('mjx-math');
    const width = math ? math.getBoundingClientRect().width : 0;
    if (width > m.clientWidth + 1)
      out.wideMath.push(`${(tex.get(m) || '?').trim().slice(0, 70)} `
                        + `(${Math.round(width)} px in ${m.clientWidth} px)`);
  }
  const doc = document.documentElement;
  out.scroll = doc.scrollWidth > doc.clientWidth ? [doc.scrollWidth, doc.clientWidth] : null;
  out.hrefs = Array.from(document.querySelectorAll('a[href]'), a => a.href);
  return out;
}
"""

_SETTLE = """
async () => {
  for (const img of document.images) img.loading = 'eager';
  await Promise.all(Array.from(document.images, img => img.decode().catch(() => null)));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  return true;
}
"""


def check_page(context, site: Path, base_url: str, page: str,
               screenshot: Path | None = None) -> list[str]:
    """Open `page` in a new tab of the Playwright browser `context`; its problems."""
    problems: list[str] = []
    tab = context.new_page()
    local = base_url.rstrip("/")

    def route(r) -> None:
        url = r.request.url
        if url.startswith(local + "/") or url == local:
            r.continue_()
        else:
            problems.append(f"{page}: request to another host (blocked): {url}")
            r.abort("blockedbyclient")

    def failed(request) -> None:
        if request.url.startswith(local):
            problems.append(f"{page}: failed request: {request.url[len(local):]} "
                            f"({request.failure})")

    def response(resp) -> None:
        if resp.status >= 400:
            problems.append(f"{page}: HTTP {resp.status} for {resp.url[len(local):]}")

    def console(msg) -> None:
        if msg.type == "error":
            problems.append(f"{page}: console error: {msg.text}")

    tab.route("**/*", route)
    tab.on("requestfailed", failed)
    tab.on("response", response)
    tab.on("console", console)
    tab.on("pageerror", lambda exc: problems.append(f"{page}: script error: {exc}"))
    try:
        tab.goto(base_url + page, wait_until="load", timeout=TIMEOUT_MS)
        tab.evaluate(_SETTLE)
        tab.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
        found = tab.evaluate(_INSPECT)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(screenshot))
    finally:
        tab.close()
    problems += [f"{page}: image not loaded: {src}" for src in found["images"]]
    problems += [f"{page}: formula not typeset: {tex}" for tex in found["math"]]
    problems += [f"{page}: MathJax error in a formula: {err}" for err in found["mathErrors"]]
    problems += [f"{page}: untypeset formula (raw TeX in the text): {t!r}"
                 for t in found["rawTex"]]
    problems += [f"{page}: image wider than the content column: {w}" for w in found["wide"]]
    problems += [f"{page}: formula wider than the content column: {w}"
                 for w in found["wideMath"]]
    if found["scroll"]:
        problems.append(f"{page}: horizontal scroll at {WIDTH} px: the page is "
                        f"{found['scroll'][0]} px wide")
    problems += link_problems(site, base_url, page, found["hrefs"])
    return problems
