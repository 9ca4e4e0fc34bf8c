"""Sphinx configuration of the series' website (`make site`, built by scripts/site.py).

scripts/site.py copies this file into the generated source folder (build/site-src/) together
with the notebooks, the landing page made from README.md, the results page, the figures, the
table of contents and MathJax, then runs `sphinx-build -W --keep-going -n` on it. The notebooks
are rendered with their committed outputs; nothing is executed.
"""

import json
from pathlib import Path

_SITE = json.loads((Path(__file__).parent / "_site.json").read_text(encoding="utf-8"))

project = "ResNet20 on CIFAR-10: fast training and filter pruning"
author = "the contributors"
copyright = "the contributors, MIT licence"  # noqa: A001 (Sphinx's name)

extensions = ["myst_nb", "sphinx_external_toc"]
external_toc_path = "_toc.yml"
external_toc_exclude_missing = False
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# The notebooks are committed with their outputs: render those, never execute.
nb_execution_mode = "off"
nb_output_stderr = "show"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
# GitHub's anchors (`README.md#notebooks`, `#3--a-section`) exist on the site too.
myst_heading_anchors = 6

# MathJax 3 is served from this site (_static/mathjax/, copied from the pinned
# django-static-mathjax package by scripts/site.py), never from a CDN.
mathjax_path = "mathjax/tex-mml-chtml.js"
mathjax3_config = {"options": {}}

html_theme = "sphinx_book_theme"
html_title = "ResNet20 pruning tutorial"
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False
html_theme_options = {
    "repository_url": _SITE["repository"],
    "use_repository_button": False,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "home_page_in_toc": True,
    # No analytics, icons or fonts from other hosts: the site works offline.
    "icon_links": [],
    # One search field, the sidebar's; not a second one in a header bar above it.
    "navbar_persistent": [],
}
html_context = {"default_mode": "light"}
