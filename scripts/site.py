"""Build the series' website into build/site/ from the committed notebooks (`make site`).

    python scripts/site.py build      # prepare build/site-src/, then sphinx-build it, strict
    python scripts/site.py prepare    # only write build/site-src/

Runs in the site's own virtual environment (build/site-venv, from site/requirements.txt;
scripts/site.sh makes it), offline, without executing any notebook. The source folder is a
generated copy, so notebooks/, study/ and README.md are never modified:

* index.md: README.md, plus the headline figure (img/headline.png, when it exists and README
  does not show it) and a list of the site's pages; results.md: RESULTS.md, when it exists;
  notebooks/ and study/: the committed notebooks with their outputs.
* Links are mapped for the site: README.md -> index.md, RESULTS.md -> results.md; a link to
  another file of the repository (helpers/lesson.py, results/series.json, ...) goes to that file
  on GitHub; a link to a file that does not exist is left as it is, so the strict build fails.
* Images on other hosts (the Colab badges) become plain text links: the site loads nothing
  from outside 127.0.0.1; the Colab setup cell is hidden (it does nothing outside Colab).
* MathJax comes from the pinned django-static-mathjax package, copied into _static/mathjax/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import posixpath
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
SITE_CONF = ROOT / "site"  # conf.py, _static/: copied into the source folder
SRC = ROOT / "build" / "site-src"
OUT = ROOT / "build" / "site"
DOCTREES = ROOT / "build" / "site-doctrees"
SPHINX_FLAGS = ["-b", "html", "-W", "--keep-going", "-n", "-q"]

SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)
# [![alt](https://host/badge.svg)](target): an image on another host inside a link.
LINKED_IMAGE = re.compile(r"\[!\[([^\]]*)\]\((https?://[^)\s]+)\)\]\(([^)\s]+)\)")
REMOTE_IMAGE = re.compile(r"!\[([^\]]*)\]\((https?://[^)\s]+)\)")
HTML_REMOTE_IMAGE = re.compile(r"<img\b[^>]*\bsrc=[\"']https?://[^>]*>", re.IGNORECASE)
LINK = re.compile(r"(\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
REF_DEF = re.compile(r"^(\s{0,3}\[[^\]]+\]:\s*)(\S+)", re.MULTILINE)
HTML_ATTR = re.compile(r"(\b(?:href|src)=[\"'])([^\"']+)([\"'])", re.IGNORECASE)
COLAB_SETUP = "# Setup: in Google Colab"


def repository_url() -> str:
    """The repository URL, read from pyproject.toml (the only place it is written)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^\s*Repository\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
    if not match:
        sys.exit("[project.urls] Repository missing from pyproject.toml")
    return match.group(1).rstrip("/")


def notebooks() -> tuple[list[str], list[str]]:
    """Repository paths of the lessons and of the study notebooks, in order."""
    def found(folder: str) -> list[str]:
        return sorted(p.relative_to(ROOT).as_posix()
                      for p in ROOT.glob(f"{folder}/[0-9][0-9]_*.ipynb"))

    return found("notebooks"), found("study")


def site_pages() -> dict[str, str]:
    """Repository path -> path of the same page in the site's source folder."""
    lessons, study = notebooks()
    pages = {"README.md": "index.md", **{p: p for p in lessons + study}}
    if (ROOT / "RESULTS.md").exists():
        pages["RESULTS.md"] = "results.md"
    return pages


def map_target(target: str, page: str, pages: dict[str, str], repo: str) -> str:
    """The link `target` written in repository file `page`, as it must read on the site."""
    if SCHEME.match(target) or target.startswith("#"):
        return target
    path, hash_, fragment = target.partition("#")
    repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(page), unquote(path)))
    if repo_path.startswith("..") or not (ROOT / repo_path).exists():
        return target  # outside the repository, or broken: the strict build reports it
    here = posixpath.dirname(pages[page])
    if repo_path in pages:
        new = posixpath.relpath(pages[repo_path], here or ".")
    elif repo_path.startswith("img/") and (ROOT / repo_path).is_file():
        new = posixpath.relpath(repo_path, here or ".")  # the figures are copied
    else:
        kind = "tree" if (ROOT / repo_path).is_dir() else "blob"
        new = f"{repo}/{kind}/main/{repo_path}"
    return new + hash_ + fragment


def rewrite_markdown(text: str, page: str, pages: dict[str, str], repo: str) -> str:
    """Map the links of one markdown text (README.md or a notebook cell) for the site."""
    parts = FENCE.split(text)
    # FENCE.split keeps the delimiters: [text, fence, code..., fence, text, ...]; rewrite only
    # the parts outside fenced code.
    out, inside = [], False
    for part in parts:
        if FENCE.fullmatch(part):
            inside = not inside
            out.append(part)
            continue
        if inside:
            out.append(part)
            continue
        part = LINKED_IMAGE.sub(lambda m: f"[{m.group(1)}]({m.group(3)})", part)
        part = REMOTE_IMAGE.sub(lambda m: f"[{m.group(1) or 'image'}]({m.group(2)})", part)
        part = HTML_REMOTE_IMAGE.sub("", part)

        def link(m: re.Match) -> str:
            return m.group(1) + map_target(m.group(2), page, pages, repo) + m.group(3)

        part = LINK.sub(link, part)
        part = REF_DEF.sub(link, part)
        part = HTML_ATTR.sub(link, part)
        out.append(part)
    return "".join(out)


def notebook_title(path: str) -> str:
    """The text of a notebook's first H1 heading (its file name when it has none)."""
    nb = json.loads((ROOT / path).read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            match = re.search(r"^# (.+)$", "".join(cell["source"]), re.MULTILINE)
            if match:
                return match.group(1).strip()
    return Path(path).stem


def landing_page(pages: dict[str, str], repo: str) -> str:
    """index.md: README.md with the headline figure and a list of the site's pages."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lessons, study = notebooks()
    extra = []
    headline = ROOT / "img" / "headline.png"
    if headline.exists() and "img/headline.png" not in readme:
        extra.append("![The headline figure of the study](img/headline.png)\n")
    listing = ["## On this site\n", "**The lessons**, one sitting each:\n"]
    listing += [f"* [{notebook_title(p)}]({p})" for p in lessons]
    listing += ["", "**The study**, the long notebooks that produce what the lessons read:\n"]
    listing += [f"* [{notebook_title(p)}]({p})" for p in study]
    if "RESULTS.md" in pages:
        listing += ["", "**[The results](RESULTS.md)**: every number of the study, with its "
                    "source."]
    extra.append("\n".join(listing) + "\n")
    # Before the first H2 heading: after the title and the opening paragraphs.
    match = re.search(r"^## ", readme, re.MULTILINE)
    at = match.start() if match else len(readme)
    text = readme[:at] + "\n".join(extra) + "\n" + readme[at:]
    return rewrite_markdown(text, "README.md", pages, repo)


def site_notebook(path: str, pages: dict[str, str], repo: str) -> str:
    """A committed notebook as the site renders it: links mapped, the Colab setup cell hidden."""
    nb = json.loads((ROOT / path).read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            cell["source"] = rewrite_markdown(source, path, pages, repo)
        elif cell["cell_type"] == "code" and source.startswith(COLAB_SETUP):
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            tags.append("remove-cell")
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def toc(pages: dict[str, str]) -> str:
    """_toc.yml of sphinx-external-toc: the landing page, the lessons, the study, the results."""
    lessons, study = notebooks()
    lines = ["root: index", "subtrees:"]
    groups = [("Lessons", lessons), ("The study", study)]
    if "RESULTS.md" in pages:
        groups.append(("Results", ["results.md"]))
    for caption, files in groups:
        if files:
            lines += [f"  - caption: {caption}", "    entries:"]
            lines += [f"      - file: {posixpath.splitext(f)[0]}" for f in files]
    return "\n".join(lines) + "\n"


def mathjax_dir() -> Path:
    """MathJax 3's es5 folder inside the installed django-static-mathjax package."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("django-static-mathjax is not installed: run scripts/site.sh build")
    es5 = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    if not (es5 / "tex-mml-chtml.js").exists():
        sys.exit(f"no tex-mml-chtml.js in {es5}")
    return es5


def prepare(src: Path = SRC) -> Path:
    """Write the site's source folder (a generated copy; the repository is only read)."""
    repo = repository_url()
    pages = site_pages()
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(SITE_CONF, src,
                    ignore=shutil.ignore_patterns("__pycache__", "requirements.txt"))
    (src / "_site.json").write_text(json.dumps({"repository": repo}) + "\n", encoding="utf-8")
    # Only the combined TeX+MathML component and what it loads on demand; not the other bundles.
    shutil.copytree(mathjax_dir(), src / "_static" / "mathjax",
                    ignore=lambda d, names: [n for n in names if d == str(mathjax_dir())
                                             and n.endswith(".js") and n != "tex-mml-chtml.js"])
    if (ROOT / "img").is_dir():
        shutil.copytree(ROOT / "img", src / "img")
    (src / "index.md").write_text(landing_page(pages, repo), encoding="utf-8")
    if "RESULTS.md" in pages:
        text = (ROOT / "RESULTS.md").read_text(encoding="utf-8")
        (src / "results.md").write_text(rewrite_markdown(text, "RESULTS.md", pages, repo),
                                        encoding="utf-8")
    for path in pages:
        if path.endswith(".ipynb"):
            (src / path).parent.mkdir(parents=True, exist_ok=True)
            (src / path).write_text(site_notebook(path, pages, repo), encoding="utf-8")
    (src / "_toc.yml").write_text(toc(pages), encoding="utf-8")
    return src


def build(src: Path = SRC, out: Path = OUT) -> int:
    """Prepare, then build the HTML with Sphinx, warnings as errors; the exit status."""
    start = time.perf_counter()
    prepare(src)
    for folder in (out, DOCTREES):
        if folder.exists():
            shutil.rmtree(folder)
    cmd = [sys.executable, "-m", "sphinx", *SPHINX_FLAGS, "-d", str(DOCTREES), str(src), str(out)]
    code = subprocess.call(cmd)
    took = time.perf_counter() - start
    if code:
        print(f"site: the build failed (exit {code}; warnings are errors) after {took:.0f} s. "
              f"Files under {src.relative_to(ROOT)}/ are copies: notebooks/ and study/ as "
              "committed, index.md from README.md, results.md from RESULTS.md (a notebook's "
              "line N0000M is cell N, line M)", file=sys.stderr)
    else:
        rel = out.relative_to(ROOT)
        print(f"site: built {rel}/ in {took:.1f} s; open it with "
              f"`python -m http.server -d {rel}` and http://127.0.0.1:8000/")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("step", choices=["build", "prepare"])
    args = parser.parse_args(argv)
    if args.step == "prepare":
        print(prepare())
        return 0
    return build()


if __name__ == "__main__":
    sys.exit(main())
