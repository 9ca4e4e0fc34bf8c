"""The package's layering: the core a learner reads never imports the study machinery."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parents[1] / "helpers"
CORE_LINES = 3000  # issue 27: the core a learner reads stays at most this long


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports (``from helpers import x`` counts as ``helpers.x``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("path", sorted(HELPERS.glob("*.py")), ids=lambda p: p.name)
def test_core_does_not_import_study(path):
    study = {n for n in _imported(path) if n == "helpers.study" or n.startswith("helpers.study.")}
    assert not study, f"{path.name} is core but imports {sorted(study)}"


def test_core_imports_load_no_study_module():
    core = sorted(p.stem for p in HELPERS.glob("*.py") if p.stem != "__init__")
    code = ("import sys\n" + "".join(f"import helpers.{m}\n" for m in core)
            + "print(sorted(m for m in sys.modules if m.startswith('helpers.study')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=HELPERS.parent, check=True).stdout.strip()
    assert out == "[]"


def test_core_stays_small():
    lines = {p.name: len(p.read_text().splitlines()) for p in HELPERS.glob("*.py")}
    assert sum(lines.values()) <= CORE_LINES, (
        f"the core (helpers/*.py) has {sum(lines.values())} lines, over {CORE_LINES}: move what "
        f"only the study uses under helpers/study/ (largest: {sorted(lines, key=lines.get)[-3:]})")
