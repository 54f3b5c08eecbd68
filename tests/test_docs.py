"""The README and the code agree: every setting documented, the contract respected."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from app.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(LOOKALIKE_[A-Z_]+)` \|", readme, re.MULTILINE))
    fields = {f"LOOKALIKE_{name.upper()}" for name in Settings.model_fields}
    assert documented == fields


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make serve" in readme
    assert "make test" in readme
    assert "scripts/system-deps" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/system-deps" in ci
    assert "make test" in ci


def _imported_roots(package: str) -> set[str]:
    roots: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
    return roots


def test_app_never_imports_training_and_back() -> None:
    assert "training" not in _imported_roots("app")
    assert "app" not in _imported_roots("training")
