#!/usr/bin/env bash
# The series as a website, built offline from the committed notebooks (nothing is executed).
#
#   scripts/site.sh build   # build/site/ (make site): Sphinx, strict (-W --keep-going -n)
#   scripts/site.sh test    # make site-test: every page in Chromium (tests/site/), screenshots
#                           # of the lessons in build/site-shots/; extra arguments go to pytest
#   scripts/site.sh serve   # http://127.0.0.1:8000/ (python -m http.server -d build/site)
#
# Both build and test first create build/site-venv from site/requirements.txt (pinned; no torch)
# when it is missing or older than that file. The browser is Debian's chromium
# (`apt-get install chromium`, /usr/bin/chromium or $SITE_CHROMIUM), driven by Playwright;
# never run `playwright install`. Without Chromium the browser tests skip, except with CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
VENV=build/site-venv
REQUIREMENTS=site/requirements.txt
STAMP=$VENV/.installed

venv() {
    if [ ! -f "$STAMP" ] || [ "$REQUIREMENTS" -nt "$STAMP" ]; then
        test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS"
        touch "$STAMP"
    fi
}

case "${1:-}" in
    build)
        venv
        "$VENV/bin/python" scripts/site.py build
        ;;
    test)
        venv
        shift
        start=$SECONDS
        rm -rf build/site-shots
        # --confcutdir: the repository's tests/conftest.py needs numpy, which this venv lacks.
        "$VENV/bin/python" -m pytest -p no:cacheprovider --confcutdir=tests/site \
            --durations=5 tests/site "$@"
        echo "site: browser tests passed in $((SECONDS - start)) s; screenshots in build/site-shots/"
        ;;
    serve)
        exec "$PY" -m http.server --bind 127.0.0.1 --directory build/site "${2:-8000}"
        ;;
    *)
        echo "usage: scripts/site.sh build|test|serve" >&2
        exit 2
        ;;
esac
