"""The package's shape (issue 21): layers without circles, rooms small enough to read, private
names kept inside their subpackage, and a README Layout section that matches the tree.

The layer contract itself is `[tool.importlinter]` in pyproject.toml, run by `lint-imports` in
.ci/run; the test below checks the same graph for circles, lazy (function-level) imports
included, since a layers contract does not forbid a circle inside one subpackage.
"""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "ftprop_cuda")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 70


def _modules():
    """(dotted name, path) of every Python module of the package."""
    found = []
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found.append((rel[: -len(".__init__")] if rel.endswith(".__init__") else rel,
                              path))
    return found


MODULES = _modules()


def _tree(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def _subpackage(module):
    """The first-level room of a module: 'ftprop_cuda.ops.functional' -> 'ops'; top-level
    modules ('ftprop_cuda', 'ftprop_cuda.rules') are their own room."""
    parts = module.split(".")
    if len(parts) == 1:
        return module
    return parts[1] if len(parts) > 2 or _is_package(module) else module


def _is_package(module):
    return os.path.isdir(os.path.join(ROOT, *module.split(".")))


def _resolve(module, is_pkg, node):
    """The absolute module an ImportFrom node names."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def test_subpackages_exist():
    rooms = {m.split(".")[1] for m, _ in MODULES if m.count(".") >= 2}
    for room in ("ops", "memory", "models", "data", "train", "sweep", "runs"):
        assert room in rooms, f"ftprop_cuda.{room} is missing"


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_module_and_function_sizes(module, path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{module}: {lines} lines (at most {MAX_MODULE_LINES})"
    long = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                long.append(f"{node.name} ({n} lines, line {node.lineno})")
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def _imports(module, path):
    """Every ftprop_cuda module or name this module imports, at any depth (lazy imports too):
    (target module, imported name or None)."""
    out = []
    is_pkg = path.endswith("__init__.py")
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.startswith("ftprop_cuda")]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_pkg, node)
            if target.startswith("ftprop_cuda"):
                out += [(target, a.name) for a in node.names]
    return out


def test_no_private_name_crosses_a_subpackage():
    bad = []
    for module, path in MODULES:
        room = _subpackage(module)
        for target, name in _imports(module, path):
            full = f"{target}.{name}" if name else target
            parts = full.split(".")
            private = [p for p in parts[1:] if p.startswith("_") and not p.startswith("__")
                       and p != "_C"]
            if private and _subpackage(target) != room:
                bad.append(f"{module} imports {full}")
        # attribute access through an imported module: `from ..ops import extension` then
        # `extension._private` counts as well
        aliases = {}
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(module, path.endswith("__init__.py"), node)
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if target.startswith("ftprop_cuda") and _is_module(sub):
                        aliases[a.asname or a.name] = sub
        for node in ast.walk(_tree(path)):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                target = aliases[node.value.id]
                if _subpackage(target) != room:
                    bad.append(f"{module} uses {target}.{node.attr}")
    assert not bad, "private names used across subpackages:\n" + "\n".join(sorted(set(bad)))


def _is_module(dotted):
    rel = os.path.join(ROOT, *dotted.split("."))
    return os.path.isfile(rel + ".py") or os.path.isfile(os.path.join(rel, "__init__.py"))


def _module_of(dotted):
    """The module a dotted import target lives in (`pkg.mod.name` -> `pkg.mod`)."""
    while dotted and not _is_module(dotted):
        dotted = dotted.rpartition(".")[0]
    return dotted


def _graph():
    graph = {m: set() for m, _ in MODULES}
    for module, path in MODULES:
        for target, name in _imports(module, path):
            dest = _module_of(f"{target}.{name}" if name else target)
            if dest and dest != module and dest in graph:
                graph[module].add(dest)
    return graph


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(root):
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycles():
    # A package's __init__ that lazily re-exports its submodules is not a circle with them:
    # submodules import siblings, never their package's names; the edges from an __init__ to
    # its own children are left out for that reason (PEP 562 __getattr__ targets).
    graph = _graph()
    for module in graph:
        graph[module] = {d for d in graph[module] if not d.startswith(module + ".")}
    assert not _cycles(graph), _cycles(graph)


def test_core_reaches_nothing_above_it():
    """The module defining step/staircase imports nothing of lean mode, models, training,
    sweeps or export, directly or through anything it imports."""
    graph = _graph()
    assert "ftprop_cuda.ops.functional" in graph
    seen, todo = set(), ["ftprop_cuda.ops.functional"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    above = [m for m in seen if _subpackage(m) not in ("ops", "ftprop_cuda")]
    assert not above, above


def _layout_paths():
    """The paths the README's Layout section names (its first code block)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```")[1::2]
    block = next(b for b in blocks if "\nftprop_cuda/" in b)
    paths, parents = [], []
    for line in block.splitlines()[1:]:
        m = re.match(r"( *)(\S+)", line)
        if not m or len(m.group(1)) >= 26:  # a description's continuation line
            continue
        depth = len(m.group(1)) // 2
        parents = parents[:depth]
        for name in re.split(r",\s*|\s{2,}", line.strip().split("   ")[0].strip()):
            name = name.strip()
            if not name or " " in name:
                continue
            paths.append("/".join(parents + [name.rstrip("/")]))
        if m.group(2).endswith("/"):
            parents.append(m.group(2).rstrip("/"))
    return paths


def test_readme_layout_matches_the_tree():
    paths = _layout_paths()
    assert len(paths) > 20, paths
    missing = [p for p in paths if not os.path.exists(os.path.join(ROOT, p))]
    assert not missing, f"README Layout names paths that do not exist: {missing}"
    # and every subpackage of the package is named there
    rooms = sorted({m.split(".")[1] for m, _ in MODULES if m.count(".") >= 2})
    unnamed = [r for r in rooms if f"ftprop_cuda/{r}" not in paths]
    assert not unnamed, f"README Layout does not name: {unnamed}"
