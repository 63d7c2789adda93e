"""The seam between the two packages is public and one-way: `queueing` uses only names in
`actors.__all__` (and `actors` never imports `queueing`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import actors

ROOT = Path(__file__).resolve().parent.parent
QUEUEING = sorted((ROOT / "queueing").rglob("*.py"))
ACTORS = sorted((ROOT / "actors").rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in a file; names empty for `import x`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names)
    return found


def _attribute_uses(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every `actors.<name>` attribute read in a file."""
    return [
        (node.lineno, node.attr)
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "actors"
    ]


@pytest.mark.parametrize("path", QUEUEING, ids=lambda p: str(p.relative_to(ROOT)))
def test_queueing_uses_only_public_actors_names(path: Path) -> None:
    public = set(actors.__all__)
    problems = []
    for line, module, names in _imports(path):
        if module == "actors":
            problems += [f"line {line}: from actors import {n}" for n in names if n not in public]
        elif module.startswith("actors."):
            problems.append(f"line {line}: imports the module {module} (use `actors` itself)")
    problems += [
        f"line {line}: actors.{name}" for line, name in _attribute_uses(path) if name not in public
    ]
    assert not problems, f"{path.name} reaches into actors' private parts: {problems}"


@pytest.mark.parametrize("path", ACTORS, ids=lambda p: str(p.relative_to(ROOT)))
def test_actors_never_imports_queueing(path: Path) -> None:
    uses = [m for _, m, _ in _imports(path) if m == "queueing" or m.startswith("queueing.")]
    assert not uses, f"{path.name} imports {uses}: actors must not know about queues"


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from actors._actor import _Cell\nfrom actors import ActorState, _x\n")
    found = _imports(bad)
    assert "actors._actor" in [m for _, m, _ in found]
    assert ["ActorState", "_x"] in [n for _, _, n in found]
