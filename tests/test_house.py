"""The checks that keep the house as it is: import contracts (pyproject.toml), no module cycles."""

import ast
import subprocess

import grimp

from tests.conftest import BASE_DIR


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=BASE_DIR, capture_output=True, text=True, timeout=600)


def test_imports_keep_the_contracts():
    linted = run(f"{BASE_DIR}/.venv/bin/lint-imports", "--no-cache")

    assert linted.returncode == 0, linted.stdout[-3000:]
    assert "0 broken" in linted.stdout


def test_no_module_imports_itself_through_others_lazy_imports_included():
    """acyclic_siblings sees cycles between siblings; this sees any loop of modules, across packages."""
    graph = grimp.build_graph("jobs", "ceres_site")
    loops = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                loops.append(f"{module} -> {imported} -> ... -> {module}")

    assert loops == []


# What the public API of rq, rq-scheduler and django-rq is, by module; their other modules are internal.
RQ_PUBLIC = {
    "rq",
    "rq.job",
    "rq.exceptions",
    "rq.registry",
    "rq.queue",
    "rq.worker",
    "rq.command",
    "rq.serializers",
    "rq_scheduler",
    "django_rq",
    "django_rq.management.commands",
}  # fmt: skip (its commands, overridden)


def test_only_rq_compat_imports_the_internals_of_rq_lazy_imports_included():
    found = []
    for path in sorted([*(BASE_DIR / "jobs").rglob("*.py"), *(BASE_DIR / "ceres_site").rglob("*.py")]):
        if path == BASE_DIR / "jobs" / "rq_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("rq", "rq_scheduler", "django_rq") and name not in RQ_PUBLIC:
                    found.append(f"{path.relative_to(BASE_DIR)}:{node.lineno} imports {name}")

    assert found == [], "reach rq's internals through jobs/rq_compat.py"


def test_ruff_finds_nothing_and_the_code_is_formatted():
    checked = run(f"{BASE_DIR}/.venv/bin/ruff", "check", ".")
    formatted = run(f"{BASE_DIR}/.venv/bin/ruff", "format", "--check", ".")

    assert checked.returncode == 0, checked.stdout[-3000:]
    assert formatted.returncode == 0, formatted.stdout[-3000:] + " (run `.venv/bin/ruff format .`)"


def test_mypy_passes_on_the_layers_that_lean_on_rq():
    typed = run(f"{BASE_DIR}/.venv/bin/mypy")

    assert typed.returncode == 0, typed.stdout[-3000:]
    assert "Success: no issues found" in typed.stdout
