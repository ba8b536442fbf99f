"""The pipeline only flows one way: import-linter's contracts from pyproject.toml must hold."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_tests_mirror_packages() -> None:
    for package in ("vocab", "generator", "service", "trainer", "grader"):
        assert (ROOT / package / "__init__.py").exists()
        assert (ROOT / "tests" / package).is_dir()
