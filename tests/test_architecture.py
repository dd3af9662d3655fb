"""The architecture holds: dependencies point one way, there is no import cycle, and the cheap entry
points stay cheap.

The layers are read from the import-linter contract in pyproject.toml (one source of truth, also
checked by `make lint`); this test adds what that contract does not see: cycles *inside* a package,
imports made inside functions or under TYPE_CHECKING counted like any other, and the torch-free
imports that keep `import facestyle` and `facestyle --help` fast.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

PACKAGE = REPO_ROOT / "facestyle"


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """Every facestyle module ``path`` imports, wherever the import statement is (function bodies and
    ``if TYPE_CHECKING:`` blocks included). ``from pkg import name`` counts as importing ``pkg.name``
    when that is a module, else ``pkg``."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {m for m in found if m in MODULES and m != me}


GRAPH = {name: imported_modules(path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_anywhere_not_even_inside_functions() -> None:
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def layers() -> list[list[str]]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return [[part.strip() for part in layer.split("|")] for layer in contract["layers"]]


def layer_of(module: str) -> tuple[int, str] | None:
    """(depth from the top, the layer package) of a module; None for the root package itself."""
    for depth, layer in enumerate(layers()):
        for package in layer:
            if module == package or module.startswith(package + "."):
                return depth, package
    return None


def test_every_module_has_a_layer() -> None:
    orphans = [m for m in MODULES if m != "facestyle" and layer_of(m) is None]
    assert not orphans, f"modules outside every layer of pyproject.toml: {orphans}"


def test_dependencies_point_one_way() -> None:
    wrong = []
    for module, imports in GRAPH.items():
        here = layer_of(module)
        for target in imports:
            there = layer_of(target)
            if here is None or there is None or here[1] == there[1]:
                continue
            if there[0] <= here[0]:  # same layer (a peer) or a higher one
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layers of docs/architecture.md:\n" + "\n".join(sorted(wrong))


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )


@pytest.mark.parametrize(
    "statement",
    [
        "import facestyle",
        "import facestyle.cli",  # what `facestyle --help` loads
        "import facestyle.models.registry",  # `facestyle models list`
        "import facestyle.gallery.gallery",  # `facestyle gallery list|stats`
    ],
)
def test_cheap_entry_points_do_not_import_torch(statement: str) -> None:
    run = _fresh(f"{statement}; import sys; print('torch' in sys.modules, 'cv2' in sys.modules)")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == "False", f"{statement} imported torch"


def test_top_level_exports_exist() -> None:
    code = (
        "import facestyle\n"
        "names = [n for n in facestyle.__all__ if n != '__version__']\n"
        "missing = [n for n in names if getattr(facestyle, n, None) is None]\n"
        "print(','.join(missing) or 'ok')\n"
    )
    run = _fresh(code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok", run.stdout


def test_unknown_top_level_name_is_an_attribute_error() -> None:
    import facestyle

    with pytest.raises(AttributeError):
        facestyle.no_such_thing  # noqa: B018


def test_the_face_pipeline_loads_only_what_it_needs() -> None:
    """Cold start (benchmarks/cold_start.py): building and running the default pipeline must not import
    torchvision or facenet-pytorch (a second of start-up), nor sympy (what `Module.to_empty` pulls in)."""
    code = (
        "import numpy as np, sys\n"
        "from facestyle.api import FacePipeline\n"
        "pipe = FacePipeline(device='cpu')\n"
        "pipe.faces(np.full((64, 64, 3), 128, np.uint8))\n"
        "print(*(m for m in ('torchvision', 'facenet_pytorch', 'sympy', 'faiss') if m in sys.modules))\n"
    )
    run = _fresh(code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "", f"the face pipeline imported {run.stdout.strip()}"
