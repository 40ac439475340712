"""The package's layers: entry points on top, library below, dependencies pointing one way.

Walks every module's imports (including those inside functions) with ``ast``, so a new import that
crosses a layer fails here, not in a user's environment.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mean_geo

PACKAGE = Path(mean_geo.__file__).parent
ENTRY_POINTS = {
    "train",
    "eval",
    "index",
    "localize",
    "export",
    "profile",
    "synth",
    "bench",
    "check",
    "report",
    "tile",
    "app",
}
#: rank of each top-level part: a module may import its own sub-package or a lower rank only
RANKS = {
    "errors": 0,
    "utils": 0.5,  # the ground floor (atomic writes, the registry): above errors, below everything else
    "models": 1,
    "data": 1,
    "losses": 2,
    "synthetic": 2,
    "retrieval": 2,
    "datamodules": 2.5,  # Lightning's side of the datasets: data's readers, retrieval's protocol, the world writer
    "files": 3,
    "reporting": 3,  # reads what evaluations wrote (the browser, the report across runs)
    "localization": 3,  # after retrieval, without Lightning: flights decoded as tracks
    "inference": 4,
    "training": 4,
    "cli": 4,
    "benchmarks": 5,  # measures training and inference code
    **dict.fromkeys(ENTRY_POINTS, 6),
}
LEGACY = Path(__file__).parent / "fixtures"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, name: str, is_package: bool = False) -> set[str]:
    """Every ``mean_geo.*`` module that the code of module ``name`` imports, at any depth (absolute
    and relative)."""
    package = name if is_package else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mean_geo.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "mean_geo":  # from mean_geo import x: x is a sub-module
                found |= {f"mean_geo.{a.name}" for a in node.names}
            elif target.startswith("mean_geo."):
                found.add(target)
    return found


def part(module: str) -> str:
    return module.split(".")[1]


MODULES = {
    module_name(p): imports_of(p.read_text(), module_name(p), p.name == "__init__.py") for p in PACKAGE.rglob("*.py")
}


def violations(modules: dict[str, set[str]]) -> list[str]:
    """Imports that point up or sideways between layers, or at an entry point."""
    found = []
    for module, targets in sorted(modules.items()):
        own = part(module)
        for target in sorted(targets):
            other = part(target)
            if other == own:
                continue
            if other in ENTRY_POINTS:
                found.append(f"{module} imports the entry point {target}")
            elif RANKS[other] >= RANKS[own]:
                found.append(f"{module} (layer {own}) imports {target} (layer {other})")
    return found


def test_every_part_of_the_package_has_a_rank():
    parts = {part(m) for m in MODULES if m != "mean_geo"}
    assert parts <= set(RANKS), f"new top-level part without a layer: {sorted(parts - set(RANKS))}"
    top_level_modules = {m.split(".")[1] for m in MODULES if m.count(".") == 1 and (PACKAGE / f"{part(m)}.py").exists()}
    assert top_level_modules == ENTRY_POINTS | {"errors"}, "only entry points and errors.py live at the top"


def test_imports_point_down():
    assert violations({m: t for m, t in MODULES.items() if m != "mean_geo"}) == []


def test_the_check_sees_what_would_break_the_layers():
    code = "def f():\n    from mean_geo.synthetic import writer\nfrom . import layouts\nimport mean_geo.train\n"
    found = imports_of(code, "mean_geo.data.probe")
    assert found == {"mean_geo.synthetic", "mean_geo.data", "mean_geo.train"}
    assert violations({"mean_geo.data.probe": found, "mean_geo.inference.x": {"mean_geo.training.lit_module"}}) == [
        "mean_geo.data.probe (layer data) imports mean_geo.synthetic (layer synthetic)",
        "mean_geo.data.probe imports the entry point mean_geo.train",
        "mean_geo.inference.x (layer inference) imports mean_geo.training.lit_module (layer training)",
    ]


@pytest.mark.parametrize("source", ["legacy_v2/export", "legacy_v2/last.ckpt", "legacy_v1/export"])
def test_inference_needs_neither_lightning_nor_hydra_nor_matplotlib(source):
    code = (
        "import sys, mean_geo\n"
        f"m = mean_geo.load_model({str(LEGACY / source)!r})\n"
        f"index = mean_geo.read_index({str(LEGACY / 'legacy_v2' / 'gallery.index')!r})\n"
        "import mean_geo.inference.localization, mean_geo.inference.export, mean_geo.inference.geo\n"
        "heavy = {n.split('.')[0] for n in sys.modules} & {'lightning', 'pytorch_lightning', 'hydra', 'matplotlib'}\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def lightning_imports(source: str) -> bool:
    """Whether code imports Lightning (or its older name), at any depth."""
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        if any(n.split(".")[0] in ("lightning", "pytorch_lightning") for n in names):
            return True
    return False


def test_data_imports_no_lightning():
    """``data/`` is readers, datasets and samplers: Lightning lives in ``datamodules/``."""
    found = [module_name(p) for p in (PACKAGE / "data").rglob("*.py") if lightning_imports(p.read_text())]
    assert found == []
    assert lightning_imports("def f():\n    from lightning.pytorch.utilities import rank_zero_only\n")
    assert not lightning_imports("import torch\nfrom mean_geo.data import layouts\n")
    code = (
        "import sys, pkgutil, importlib, mean_geo.data\n"
        "for m in pkgutil.iter_modules(mean_geo.data.__path__):\n"
        "    importlib.import_module(f'mean_geo.data.{m.name}')\n"
        "heavy = {n.split('.')[0] for n in sys.modules} & {'lightning', 'pytorch_lightning'}\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def import_cycles(modules: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or round a circle (imports inside
    functions included: a lazy import only hides a circle), found with Tarjan's algorithm."""
    graph = {m: sorted(t for t in targets if t in modules and t != m) for m, targets in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_circle_anywhere_in_the_package():
    assert import_cycles(MODULES) == []


def test_the_circle_check_sees_a_circle_hidden_in_a_function():
    writer = "from mean_geo.inference.loading import load_model\n"
    reader = "def save():\n    from mean_geo.inference.export import write\n"
    modules = {
        "mean_geo.inference.export": imports_of(writer, "mean_geo.inference.export"),
        "mean_geo.inference.loading": imports_of(reader, "mean_geo.inference.loading"),
        "mean_geo.inference.geo": set(),
    }
    assert import_cycles(modules) == [["mean_geo.inference.export", "mean_geo.inference.loading"]]
