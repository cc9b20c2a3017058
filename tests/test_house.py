"""The checks that keep the house as it is: import contracts (pyproject.toml), no module cycles."""

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
