"""The layout of the package keeps its plan: the import contracts of pyproject.toml hold
(import-linter), no import cycles, small modules and folders; and the test suite keeps its own
habits (helpers imported from helpers.py only, every project warning an error in the tests)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from helpers import REPO, SHARED

PACKAGE = REPO / "placedemarche"
MAX_MODULE_LINES = 450
MAX_MODULES_PER_FOLDER = 10  # plugins/ excluded: one module per plugin is the plugin layout


def _folders():
    for folder, dirs, _ in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if "plugins" not in Path(folder).relative_to(PACKAGE).parts:
            yield Path(folder)


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    command = [str(lint)] if lint.is_file() else [shutil.which("lint-imports") or "lint-imports"]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        pytest.fail("lint-imports not found: install the dev extra (import-linter)")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_import_cycles_even_through_imports_inside_functions():
    tool = Path(os.environ.get("PM_SHARED", SHARED)) / "tools" / "import_cycles.py"
    if not tool.is_file():
        pytest.skip(f"{tool} not found (set PM_SHARED)")
    done = subprocess.run([sys.executable, str(tool), str(PACKAGE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "cycles=0", done.stdout + done.stderr  # stderr lists each cycle


def test_no_module_is_over_the_line_limit():
    long = {str(path.relative_to(REPO)): n for path in sorted(PACKAGE.rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"over {MAX_MODULE_LINES} lines: split them"


def test_no_folder_holds_a_flat_list_of_modules():
    wide = {str(folder.relative_to(REPO)): n for folder in _folders()
            if (n := len([p for p in folder.glob("*.py") if p.name != "__init__.py"])) > MAX_MODULES_PER_FOLDER}
    assert wide == {}, f"over {MAX_MODULES_PER_FOLDER} modules in one folder: make a subpackage"


def test_every_package_says_what_it_holds():
    silent = [str(folder.relative_to(REPO)) for folder in _folders() if (folder / "__init__.py").is_file()
              and not ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8")))]
    assert silent == []


def test_every_project_warning_is_an_error_in_the_tests():
    """A new warning class of placedemarche must be listed in pyproject's filterwarnings."""
    classes = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                    (base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")).endswith("Warning")
                    for base in node.bases):
                classes.add(node.name)
    assert classes, "no warning class found: the scan is broken"
    filters = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["filterwarnings"]
    errors = {f.split(":")[2].rpartition(".")[2] for f in filters if f.startswith("error::")}
    assert classes <= errors, f"add error::<module>.<class> entries for {sorted(classes - errors)}"


def test_test_modules_import_helpers_not_each_other():
    """Shared test code lives in helpers.py (or conftest fixtures): importing a test module or
    conftest breaks under --import-mode=importlib."""
    tests = Path(__file__).parent
    local = {p.stem for p in tests.glob("*.py")} - {"helpers"}
    bad = []
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{path.name}: {name}" for name in names if name and name.split(".")[0] in local]
    assert bad == []
