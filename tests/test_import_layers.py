"""The package's import graph, read from the source with ``ast`` (nothing is imported):
no import circle among ``fairseq_crild`` modules, and no lower layer importing a higher one.

Every import counts, including those inside functions: a lazy import only moves a circle
from import time to call time (``models.loading`` -> ``models.roberta_conversion`` ->
``teacher`` -> ``models.loading`` was one). The implicit import of a parent package (importing
``fairseq_crild.models.bert`` first runs ``fairseq_crild/models/__init__.py``) is not an edge;
importing a name from a package's ``__init__`` is.
"""

import ast
import os
from typing import Dict, List, Optional, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "fairseq_crild"

# lower layers first; a module may import its own layer and the layers before it. Every module
# of the package has a layer (test_every_module_has_a_layer); only the package's __init__,
# which registers the fairseq components and installs the patches, stands above them all.
LAYERS = [
    # leaves every layer uses: the error base class, atomic output folders, the --user-dir
    # path, the build of the C++ CPU kernels (models' dropout, distill's relation KL)
    ("base", ["fairseq_crild.errors", "fairseq_crild.outputs", "fairseq_crild.locations",
              "fairseq_crild.cpp_build"]),
    ("patches", ["fairseq_crild.patches"]),  # fairseq patched once (the safe loader included)
    ("optim", ["fairseq_crild.optim"]),
    ("data", ["fairseq_crild.data"]),  # GLUE folders, the vocabulary, metrics; no model
    ("models", ["fairseq_crild.models"]),  # encoders, their checkpoints and conversions
    ("distill", ["fairseq_crild.distill"]),  # teacher, student init, roles, losses, EMD
    ("criterions", ["fairseq_crild.criterions"]),  # and the contract the task implements
    ("tasks", ["fairseq_crild.tasks"]),
    ("export", ["fairseq_crild.export"]),  # the trained student outside fairseq-train
    ("pipeline", ["fairseq_crild.pipeline"]),
    ("cli", ["fairseq_crild.cli", "fairseq_crild.__main__"]),
]


def _module_files() -> Dict[str, str]:
    files = {}
    for folder, _, names in os.walk(os.path.join(ROOT, PACKAGE)):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                files[".".join(parts)] = path
    return files


def _resolve(name: str, modules: Set[str]) -> Optional[str]:
    """The module of ``name`` (a module, or a name defined in a module), or None if outside
    the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> Dict[str, Set[str]]:
    files = _module_files()
    modules = set(files)
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_package = path.endswith("__init__.py")
        for node in ast.walk(tree):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = module.split(".")
                    anchor = anchor if is_package else anchor[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # "from pkg import sub" names the submodule when there is one
                targets = [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                if not target.startswith(PACKAGE):
                    continue
                found = _resolve(target, modules)
                if found is not None and found != module and found != PACKAGE:
                    graph[module].add(found)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import circle (its modules in order, the first repeated at the end), or None."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _layer(module: str) -> Optional[int]:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def test_find_cycle_finds_the_old_loading_circle():
    graph = {"a.loading": {"a.conversion"}, "a.conversion": {"a.teacher"},
             "a.teacher": {"a.loading"}, "a.other": {"a.loading"}}
    assert find_cycle(graph) == ["a.conversion", "a.teacher", "a.loading", "a.conversion"]
    graph["a.conversion"] = set()
    assert find_cycle(graph) is None


def test_the_graph_sees_lazy_and_package_imports():
    graph = import_graph()
    # a function-level import counts (checkpoint_flags imports the loader when called)
    assert "fairseq_crild.models.loading" in graph["fairseq_crild.models.arch_check"]
    # "from fairseq_crild.models import BertModel" is an edge to the package __init__
    assert "fairseq_crild.models.bert" in graph["fairseq_crild.models"]


def test_no_import_circle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_lower_layer_imports_a_higher_one():
    graph = import_graph()
    wrong = []
    for module, targets in sorted(graph.items()):
        mine = _layer(module)
        if mine is None:
            continue
        for target in sorted(targets):
            theirs = _layer(target)
            if theirs is not None and theirs > mine:
                wrong.append(f"{module} ({LAYERS[mine][0]}) imports {target} "
                             f"({LAYERS[theirs][0]})")
    assert not wrong, "\n".join(wrong)


def test_every_module_has_a_layer():
    """A new module must be placed in the table, so the layer check covers it."""
    unplaced = sorted(m for m in _module_files() if m != PACKAGE and _layer(m) is None)
    assert not unplaced, "modules without a layer: " + ", ".join(unplaced)
