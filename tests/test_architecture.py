"""The code keeps its shape: import-linter's contracts hold, no two modules import each other,
tests mirror the source tree, and files stay short enough to read."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vocab", "generator", "service", "trainer", "grader", "tinystories")
MAX_LINES = 400
# A file may be longer when its first lines say why, starting with this phrase.
LONG_FILE_REASON = "Longer than 400 lines because"


def test_import_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_tests_mirror_packages() -> None:
    for package in ("vocab", "generator", "service", "trainer", "grader"):
        assert (ROOT / package / "__init__.py").exists()
        assert (ROOT / "tests" / package).is_dir()
    for room in ("api", "dashboard", "dataset", "store", "work"):
        assert (ROOT / "service" / room / "__init__.py").exists()
        assert (ROOT / "tests" / "service" / room / "__init__.py").exists()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """Project modules a file imports, at any depth of the file (lazy imports count too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_two_modules_import_each_other() -> None:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph = {m: {i for i in _imports(p, m) if i in modules and i != m} for m, p in modules.items()}
    circles = sorted(
        f"{a} <-> {b}"
        for a, imported in graph.items()
        for b in imported
        if a < b
        and a in graph.get(b, ())
        # A package's __init__ re-exporting its own submodules is not a circle of concerns.
        and not b.startswith(a + ".")
        and not a.startswith(b + ".")
    )
    assert circles == []


def test_files_stay_short() -> None:
    roots = [ROOT / pkg for pkg in PACKAGES] + [ROOT / "benchmarks", ROOT / "tests"]
    too_long = []
    for path in sorted(p for root in roots for p in root.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES and not any(LONG_FILE_REASON in line for line in lines[:15]):
            too_long.append(f"{path.relative_to(ROOT)}: {len(lines)} lines")
    assert too_long == []
