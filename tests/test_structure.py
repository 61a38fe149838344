"""The package's shape: no module imports one that imports it back, directly or through others
(lazy imports inside functions included); no type check waived in the request path."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "addon" / "proxysigv4_core"


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (`from .x import ...`, `from . import x`)."""
    modules = {p.stem for p in package.glob("*.py")}
    graph = {}
    for path in package.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                deps |= {n for n in names if n in modules}
        graph[path.stem] = deps - {path.stem}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each as the path that closes it."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                found.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_cycles_are_found_in_a_graph_that_has_them():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycles():
    graph = import_graph(PACKAGE)
    assert {"addon", "signing", "signers", "config", "browser"} <= set(graph)
    assert cycles(graph) == []


# The modules a request passes through, from its headers to its answer: no type check is waived there.
REQUEST_PATH = (
    "addon answers forwarding headers intake presign redaction requestlog responses routing signers "
    "signing sigv4a streaming"
).split()
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<code>\[[a-z-]+(?:,\s*[a-z-]+)*\])?")


def type_ignores(path: Path) -> list[tuple[int, str, bool]]:
    """(line number, the ignore, whether the line or the one above says why) for each
    `# type: ignore` in a module."""
    lines = path.read_text().splitlines()
    found = []
    for i, line in enumerate(lines):
        if m := IGNORE.search(line):
            after = line[m.end() :].strip().lstrip("#").strip()
            j = i - 1  # the comment above a run of ignored lines explains each of them
            while j >= 0 and IGNORE.search(lines[j]):
                j -= 1
            above = lines[j].strip() if j >= 0 else ""
            found.append((i + 1, m.group(0), bool(after) or above.startswith("#")))
    return found


def test_type_ignores_name_their_code_and_reason_and_none_is_in_the_request_path(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "x = 1  # type: ignore\n# why\ny = 2  # type: ignore[misc]\nz = 3  # type: ignore[misc]\n"
    )
    assert type_ignores(sample) == [
        (1, "# type: ignore", False),
        (3, "# type: ignore[misc]", True),
        (4, "# type: ignore[misc]", True),
    ]
    for path in sorted(PACKAGE.glob("*.py")):
        for line, ignore, explained in type_ignores(path):
            assert path.stem not in REQUEST_PATH, f"{path.name}:{line}: {ignore} in the request path"
            assert "[" in ignore and explained, f"{path.name}:{line}: {ignore} without a code and a reason"
    assert all((PACKAGE / f"{name}.py").exists() for name in REQUEST_PATH)
