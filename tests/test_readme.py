"""The README's Python examples run as written, on the real shared data.

Every ```python block of README.md is run in a fresh interpreter, in an empty working directory, with
``../shared/data`` pointing at the data this test run uses (the only substitution). A block that raises
fails the test; a ``# -> text`` comment on a ``print`` line is checked against what that line printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def python_blocks() -> list[tuple[int, str]]:
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]


def expected_outputs(code: str) -> list[str]:
    """The ``# -> ...`` promises of ``print(...)`` lines, in order."""
    return [m.group(1).strip() for m in re.finditer(r"^\s*print\(.*#\s*->\s*(.+)$", code, re.M)]


def test_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("line,code", python_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_python_block_runs_as_written(line: int, code: str, shared_data: Path, tmp_path: Path) -> None:
    (tmp_path / "data-link").symlink_to(shared_data)
    source = code.replace("../shared/data", str(tmp_path / "data-link"))
    run = subprocess.run(
        [sys.executable, "-c", source], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"README.md line {line}:\n{run.stderr[-2000:]}"
    printed = run.stdout.splitlines()
    for promise in expected_outputs(code):
        assert any(promise in out for out in printed), f"README.md line {line}: {promise!r} not in {printed}"
