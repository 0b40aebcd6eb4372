"""The house's rules, checked on the code itself: the config schema loads without torch, no import circle among
the package's modules, sub-packages import only the floors below them (FLOORS), no function over 60 lines
(test_layout.py: the top-level links)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "selfsup_clusters"
MAX_LINES = 60


def test_the_config_schema_loads_a_yaml_without_torch_or_timm(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: moco\nepochs: 3\n")
    code = ("import sys; from selfsup_clusters.config import read_config; cfg = read_config(sys.argv[1]); "
            "print(cfg.method, cfg.epochs, sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["moco", "3", "[]"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.Module) -> set[str]:
    """Every module the code imports, at the top or inside a function (a lazy import is a dependency too), except
    in `if TYPE_CHECKING:` blocks (type hints only)."""
    hints = {id(inner) for node in ast.walk(tree)
             if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for inner in ast.walk(node)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in hints:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}  # a submodule imported by name
    return names


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(ast.parse(path.read_text())) if m in modules and m != name}
            for name, path in modules.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (circle := visit(nxt, [*path, nxt])):
                return circle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (circle := visit(start, [start])):
            return circle
    return None


def test_no_import_circle_among_the_package_modules():
    graph = import_graph()
    assert "selfsup_clusters.methods.registry" in graph["selfsup_clusters.recipes"]  # the graph sees real imports
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    # a package importing its own submodules is how packages work, not a circle (data/__init__ <-> data/cache)
    packages = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    graph = {name: {m for m in deps if m not in packages or not name.startswith(m + ".")}
             for name, deps in graph.items()}
    assert find_circle(graph) is None


# The package's floors, bottom first: a module may import its own floor and the floors before it, never one after
# (the one place the allowed directions are written; each sub-package's __init__ says the same in words). A
# sub-package is a floor; so are the top-level modules between them (config, recipes) and above them.
FLOORS = ["core", "data", "clusters", "evaluation", "config", "methods", "recipes", "training", "studies",
          "commands", "cli", "__main__"]


def floor_of(module: str) -> str | None:
    """"selfsup_clusters.training.run" -> "training"; the package itself (its lazy exports) is no floor."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for name, deps in sorted(graph.items()):
        here = floor_of(name)
        for dep in sorted(deps):
            there = floor_of(dep)
            if here and there and FLOORS.index(there) > FLOORS.index(here):
                found.append(f"{name} -> {dep} ({here} may import only {', '.join(FLOORS[:FLOORS.index(here)])})")
    return found


def test_every_module_sits_on_a_floor_and_imports_only_the_floors_below():
    graph = import_graph()
    assert {floor_of(name) for name in graph} - {None} == set(FLOORS), "a new top-level module or sub-package needs " \
        "its place in FLOORS"
    planted = {"selfsup_clusters.core.files": {"selfsup_clusters.training.run"}, "selfsup_clusters.training.run": set()}
    assert upward_imports(planted) == ["selfsup_clusters.core.files -> selfsup_clusters.training.run (core may "
                                       "import only )"]
    assert upward_imports(graph) == []


def test_each_sub_package_says_what_it_owns_and_which_floors_it_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        floor = init.parent.name
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        said = next((line for line in doc.splitlines() if line.startswith("May import:")), None)
        assert said is not None and "Owns" in doc, f"{floor}/__init__.py: say what it owns and 'May import: ...'"
        named = {word.strip(".,()") for word in said.split()} & set(FLOORS)
        assert named == set(FLOORS[:FLOORS.index(floor)]), f"{floor}/__init__.py: {said!r} (FLOORS says otherwise)"


def long_functions(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - start + 1 > MAX_LINES:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} {node.end_lineno - start + 1}")
    return found


def test_no_function_in_the_package_is_over_60_lines(tmp_path):
    planted = tmp_path / "long.py"
    planted.write_text("def f():\n" + "    x = 1\n" * MAX_LINES)
    assert long_functions(tmp_path) == [f"long.py:1 f {MAX_LINES + 1}"]
    assert long_functions(PACKAGE) == []
