"""No function or method outside tests is longer than ``MAX_LINES`` lines (STYLE.md: one
algorithm per file, readable top to bottom; a longer function is split into its numbered steps).

Read from every module of the packages and of bench/, by parsing: a function's length runs
from its ``def`` (or first decorator) to its last line.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "capture", "fitting", "annotation", "generation", "hand_model", "data_schemas", "bench")
MAX_LINES = 100


def long_functions(path: Path) -> list[str]:
    """``path:line name (n lines)`` of every function in ``path`` longer than MAX_LINES, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            n = node.end_lineno - first + 1
            if n > MAX_LINES:
                found.append(f"{path.relative_to(ROOT)}:{first} {node.name} ({n} lines)")
    return found


def violations(package: str) -> list[str]:
    return [f for path in sorted((ROOT / package).rglob("*.py")) for f in long_functions(path)]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_longer_than_the_limit(package):
    assert violations(package) == []


def test_the_check_sees_a_long_function(tmp_path, monkeypatch):
    (tmp_path / "fitting").mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    (tmp_path / "fitting" / "x.py").write_text(f"class A:\n    def short(self):\n        pass\n\n\ndef f():\n{body}")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations("fitting") == [f"fitting/x.py:6 f ({MAX_LINES + 1} lines)"]
