"""How scripts/site.py turns the repository's markdown into the site's (no browser needed).

Runs in any environment with the standard library (`pytest tests/site/test_site_build.py`).
"""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("site_build", ROOT / "scripts" / "site.py")
site_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(site_build)

PAGES = {"README.md": "index.md", "RESULTS.md": "results.md",
         "notebooks/01_resnet20.ipynb": "notebooks/01_resnet20.ipynb",
         "study/02_train_cifar10.ipynb": "study/02_train_cifar10.ipynb"}
REPO = site_build.repository_url()


def rewrite(text, page="notebooks/01_resnet20.ipynb"):
    return site_build.rewrite_markdown(text, page, PAGES, REPO)


def test_colab_badges_become_text_links():
    badge = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             "(https://colab.research.google.com/github/x/y/blob/main/notebooks/01.ipynb)")
    assert rewrite(badge) == ("[Open In Colab]"
                              "(https://colab.research.google.com/github/x/y/blob/main/"
                              "notebooks/01.ipynb)")
    assert rewrite("![a shield](https://img.shields.io/x.svg)") == \
        "[a shield](https://img.shields.io/x.svg)"
    assert rewrite('<img src="https://example.org/x.png" alt="x"> text') == " text"


def test_links_to_pages_of_the_site_are_mapped():
    assert rewrite("[all](../README.md#notebooks)") == "[all](../index.md#notebooks)"
    assert rewrite("[s](../study/02_train_cifar10.ipynb)") == "[s](../study/02_train_cifar10.ipynb)"
    assert rewrite("[r](RESULTS.md#run-times)", page="README.md") == "[r](results.md#run-times)"
    assert rewrite("[l](notebooks/01_resnet20.ipynb)", page="README.md") == \
        "[l](notebooks/01_resnet20.ipynb)"


def test_other_repository_files_link_to_github_and_broken_links_stay_broken():
    assert rewrite("[code](../helpers/lesson.py)") == f"[code]({REPO}/blob/main/helpers/lesson.py)"
    assert rewrite("[dir](../helpers)") == f"[dir]({REPO}/tree/main/helpers)"
    # A link to a file that does not exist is left as written: the strict build reports it.
    assert rewrite("[gone](../study/99_missing.ipynb)") == "[gone](../study/99_missing.ipynb)"
    assert rewrite("[out](../../elsewhere.md)") == "[out](../../elsewhere.md)"


def test_code_and_anchors_are_left_alone():
    text = "[a](#3--section) and\n```\n[x](../README.md)\n```\n[b](https://example.org/)"
    assert rewrite(text) == text


def test_the_colab_setup_cell_is_hidden_and_the_rest_kept():
    lesson = site_build.notebooks()[0][0]
    nb = json.loads(site_build.site_notebook(lesson, site_build.site_pages(), REPO))
    original = json.loads((ROOT / lesson).read_text(encoding="utf-8"))
    assert len(nb["cells"]) == len(original["cells"])
    hidden = [i for i, c in enumerate(nb["cells"])
              if "remove-cell" in c["metadata"].get("tags", [])]
    setup = [i for i, c in enumerate(original["cells"]) if c["cell_type"] == "code"
             and "".join(c["source"]).startswith(site_build.COLAB_SETUP)]
    assert hidden == setup and len(setup) == 1


def test_the_toc_lists_the_lessons_then_the_study_then_the_results():
    lessons, study = site_build.notebooks()
    toc = site_build.toc(site_build.site_pages())
    files = [line.split("file: ")[1] for line in toc.splitlines() if "file: " in line]
    expected = [p.removesuffix(".ipynb") for p in lessons + study]
    if (ROOT / "RESULTS.md").exists():
        expected.append("results")
    assert files == expected
