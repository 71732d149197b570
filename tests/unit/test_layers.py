"""The domain stays pure: no database, no web, no clock reads. Checked on the source, so it cannot rot."""

import ast
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "src" / "remit" / "domain"
FORBIDDEN_IMPORTS = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "typer",
    "rich",
    "fastapi",
    "remit.adapters",
    "remit.service_layer",
    "remit.entrypoints",
)
MODULES = sorted(DOMAIN.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(DOMAIN)) for p in MODULES])
def test_domain_module_imports_nothing_from_outer_layers(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert not name.startswith(FORBIDDEN_IMPORTS), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(DOMAIN)) for p in MODULES])
def test_domain_never_reads_the_clock(path):
    if path.name == "clock.py":
        return  # the one place that may: SystemClock
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("now", "today", "utcnow", "time"):
            base = node.value
            base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            assert base_name not in ("datetime", "date", "time"), (
                f"{path.name} reads the clock: {base_name}.{node.attr}"
            )


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(DOMAIN)) for p in MODULES])
def test_domain_never_uses_float(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float":
            pytest.fail(f"{path.name} calls float()")
        if isinstance(node, ast.Constant) and isinstance(node.value, float):
            pytest.fail(f"{path.name} has a float literal {node.value}")
