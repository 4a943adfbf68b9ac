"""The README's Layout table is the map of the tree: every path it names exists, every module is on it.

And the package's size rule: a module over ~400 lines says at its top why it is one module.
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Past this many lines a module must say why it is still one module (its docstring).
MODULE_LINES = 420


def _layout_rows() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def _expand(path: str) -> list[str]:
    """``a/{b,c}.py`` -> ``a/b.py``, ``a/c.py`` (the table's shorthand)."""
    parts = re.split(r"\{([^}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*choices)]


def _named_paths() -> set[str]:
    named: set[str] = set()
    for row in _layout_rows():
        first_cell = row.split(" | ", 1)[0]
        for path in re.findall(r"`([^`]+)`", first_cell):
            if "/" not in path and not path.endswith((".py", ".yaml")):
                continue
            named.update(_expand(path))
    return named


def _resolve(path: str) -> Path:
    # A short form like `ui/templates/` continues the package path of its row.
    if (ROOT / path).exists():
        return ROOT / path
    return ROOT / "plugins" / "services_sync" / path


def test_every_path_in_the_layout_table_exists():
    missing = sorted(p for p in _named_paths() if not _resolve(p).exists())
    assert not missing, f"README Layout names paths that are not in the tree: {missing}"


def test_every_package_module_and_devkit_part_is_in_the_layout_table():
    named = {str(_resolve(p).relative_to(ROOT)).rstrip("/") for p in _named_paths()}
    package = ROOT / "plugins" / "services_sync"
    modules = {
        str(path.relative_to(ROOT)) for path in package.rglob("*.py") if path.name != "__init__.py"
    }
    devkit = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "devkit").iterdir()
        if (path.suffix == ".py" and path.name != "__init__.py")
        or (path.is_dir() and (path / "__init__.py").exists())
    }
    absent = sorted((modules | devkit) - named)
    assert not absent, f"not on the README's Layout table: {absent}"


def test_a_long_module_says_why_at_its_top():
    unexplained = []
    for top in ("plugins", "dags", "devkit"):
        for path in sorted((ROOT / top).rglob("*.py")):
            source = path.read_text()
            if len(source.splitlines()) <= MODULE_LINES:
                continue
            if "400-line" not in (ast.get_docstring(ast.parse(source)) or ""):
                unexplained.append(str(path.relative_to(ROOT)))
    assert not unexplained, (
        f"modules over {MODULE_LINES} lines: split them, or say at the top of the docstring why "
        f"each is one module (naming the ~400-line guide): {unexplained}"
    )
