"""No module of rlhpo writes another object's private attributes (``other._name = ...``, or
``setattr(other, "_name", ...)``): a part changes through its own methods and public attributes."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _private(node: ast.AST) -> bool:
    """An attribute ``x._name`` of something other than ``self`` or ``cls``."""
    return (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")))


def _stored(target: ast.AST) -> list[ast.AST]:
    """What an assignment target stores into: each element of a tuple, the container of ``x[k]``."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return [t for e in target.elts for t in _stored(e)]
    if isinstance(target, ast.Starred):
        return _stored(target.value)
    return [target.value if isinstance(target, ast.Subscript) else target]


def private_writes(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        targets = node.targets if isinstance(node, ast.Assign) else []
        targets = [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else targets
        found += [(t.lineno, ast.unparse(t)) for target in targets for t in _stored(target) if _private(t)]
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and str(node.args[1].value).startswith("_")
                and not (isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "cls"))):
            found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def test_the_check_sees_writes_and_passes_own_state():
    writes = "c._set = 1\nc.driver._state += 1\nsetattr(m, '_n', 0)\nx, y._z = 1, 2\nc._d[k] = 1\n"
    assert [line for line, _ in private_writes(writes)] == [1, 2, 3, 4, 5]
    own = "self._x = 1\ncls._y = 2\nc.driver = d\nself._a.b = 3\nif c._x == 1: pass\ns = 'c._x = 1'\nself._d[c._k] = 1\n"
    assert private_writes(own) == []


def test_no_module_writes_private_attributes_of_other_objects():
    found = [f"{path.relative_to(ROOT)}:{line}: {text}" for path in sorted((ROOT / "rlhpo").rglob("*.py"))
             for line, text in private_writes(path.read_text())]
    assert not found, "writes of another object's private attributes:\n" + "\n".join(found)
