"""The layout's dependency rule (DESIGN.md), read from every import of every module:

    pipeline -> {capture, fitting, annotation, generation} -> {hand_model, data_schemas}

Stage packages never import each other, ``hand_model`` imports only ``data_schemas``,
``data_schemas`` none of the others, and nothing imports ``pipeline``.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"capture", "fitting", "annotation", "generation"}
PACKAGES = STAGES | {"pipeline", "hand_model", "data_schemas"}
ALLOWED = {
    "pipeline": PACKAGES,
    **{stage: {stage, "hand_model", "data_schemas"} for stage in STAGES},
    "hand_model": {"hand_model", "data_schemas"},
    "data_schemas": {"data_schemas"},
}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in ``path``, at any depth (functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, top in imports(path):
            if top in PACKAGES and top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    return bad


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_imports_only_what_the_rule_allows(package):
    assert violations(package) == []


def test_the_check_sees_a_stage_to_stage_import(tmp_path, monkeypatch):
    (tmp_path / "annotation").mkdir()
    (tmp_path / "annotation" / "x.py").write_text("def f():\n    from capture.detect.stage import detect\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations("annotation") == ["annotation/x.py:2 imports capture"]
