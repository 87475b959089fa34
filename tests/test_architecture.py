"""The package keeps its shape: one-way dependencies, tasks only in tfbert/tasks,
a repository that explains itself, and a wheel that carries the demo data."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tfbert")

# A part may import only parts of a lower level (docs/ARCHITECTURE.md).
LEVELS = {
    "errors": 0, "files": 0,
    "config": 1, "precision": 1, "saved_model": 1,
    "text": 2, "layers": 2, "serving": 2,
    "models": 3, "data": 3,
    "tasks": 4,
    "checkpoints": 5,
    "training": 6, "export": 6,
    "demo": 7,
    "cli": 8,
    "__main__": 9,
}
BUILTIN_TASKS = {"classify", "multilabel", "regress", "tag", "qa", "pretrain", "encoder"}
# TF Serving's Classify and Regress RPCs share two of those names (signature
# names, REST verbs); a table of exactly those is about the RPCs, not tasks.
RPC_NAMES = {"classify", "regress"}


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(module: str, path: str) -> set[str]:
    """tfbert modules `module` imports anywhere (also inside functions)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                # `from pkg import sub` depends on the submodule when it is one.
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in MODULES else base)
    return {t for t in targets if t in MODULES and t != module}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_part_has_a_level():
    parts = {_part(m) for m in MODULES} - {None}
    assert parts <= set(LEVELS), f"add {sorted(parts - set(LEVELS))} to LEVELS and the docs"


def test_no_import_goes_up_or_sideways():
    wrong = []
    for module, targets in GRAPH.items():
        source = _part(module)
        if source is None:  # tfbert/__init__.py re-exports names lazily
            continue
        for target in targets:
            part = _part(target)
            if part is not None and part != source and LEVELS[part] >= LEVELS[source]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the dependency direction:\n" + "\n".join(sorted(wrong))


def test_serving_imports_no_model_code():
    for module, targets in GRAPH.items():
        if _part(module) == "serving":
            assert {_part(t) for t in targets} <= {"serving", "errors", "files", "saved_model",
                                                   "config"}, module


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def _task_name_constants(node: ast.AST) -> set[str]:
    values = [node]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        values = node.elts
    return {v.value for v in values
            if isinstance(v, ast.Constant) and v.value in BUILTIN_TASKS}


def test_only_tfbert_tasks_switches_on_task_names():
    found = []
    for module, path in MODULES.items():
        if _part(module) == "tasks":
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            names = set()
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    names |= _task_name_constants(side)
            elif isinstance(node, ast.Dict):
                names = {k.value for k in node.keys
                         if isinstance(k, ast.Constant) and k.value in BUILTIN_TASKS}
                names = names if len(names) > 1 and names - RPC_NAMES else set()
            if names:
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {sorted(names)}")
    assert not found, "task names switched on outside tfbert/tasks:\n" + "\n".join(found)


def test_the_repository_cites_no_outside_document():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    citing = []
    for name in tracked:
        if name.endswith((".py", ".md", ".toml", ".txt", ".yml", ".cfg")) or "Dockerfile" in name:
            text = open(os.path.join(ROOT, name), encoding="utf-8", errors="replace").read()
            if re.search(r"DESIGN(\.md)?\s*§|DESIGN \d", text):
                citing.append(name)
    assert not citing, f"files cite a document that is not in the repository: {citing}"


@pytest.mark.timeout(300)
def test_the_wheel_carries_the_demo_data(tmp_path):
    # Build from a copy of the tracked files: what a fresh clone would build.
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    source = tmp_path / "src"
    for name in filter(None, tracked):
        if os.path.exists(os.path.join(ROOT, name)):
            target = source / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(open(os.path.join(ROOT, name), "rb").read())
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                          str(source)], capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("tfbert-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"tfbert/demo/train.jsonl", "tfbert/demo/test.jsonl"} <= names
    assert "tfbert/export/tf_serving_probe.py" in names
    assert not any(n.startswith("tests/") for n in names)
