"""The architecture the README's layout describes, checked on the imports themselves:
`ml/` is pure PyTorch (no Django, nothing of the service), and the domain (`recognizer/`) sends
tasks by name and never imports `worker/`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def imports(package: str) -> list[tuple[str, str]]:
    """(file:line, imported module) for every import in `package`, nested ones included."""
    found = []
    for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            where = f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}"
            found += [(where, module) for module in modules]
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("ml", ("django", "rest_framework", "celery", "digitsite", "recognizer", "worker")),
        ("recognizer", ("worker",)),
    ],
)
def test_a_package_never_imports_what_sits_above_it(package, forbidden):
    offenders = [
        f"{where} imports {module}"
        for where, module in imports(package)
        if module.split(".")[0] in forbidden
    ]
    assert offenders == []
