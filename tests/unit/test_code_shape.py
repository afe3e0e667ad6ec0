"""The shape of the code, read from its syntax tree: no module of qtool over 400 lines, no function
over 60 lines unless a `# long:` comment says why, and no test module importing another one."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "qtool"
TESTS = REPO / "tests"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_MARK = "# long:"

# Test modules may share code only through these (and conftest.py files): a test module that
# imports another one runs that module's code, and its fixtures and tests, in the wrong place.
SHARED_TEST_MODULES = ("tests.helpers", "tests.tiny_models")
TEST_PACKAGES = ("tests.unit", "tests.cli", "tests.scripts", "tests.gpu")


class Function(NamedTuple):
    path: str  # relative to the repository, with forward slashes
    name: str  # qualified: Class.method, outer.inner
    lines: int  # from the `def` line to the last line of the body
    explained: bool  # a `# long:` comment right above the def or on the first line of its body


def relative(path: Path, root: Path = REPO) -> str:
    return path.relative_to(root).as_posix()


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def module_lines(source: str) -> int:
    return len(source.splitlines())


def own_line_comments(source: str) -> dict[int, str]:
    """Line number -> text of each comment that is alone on its line."""
    lines = source.splitlines()
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        row, column = token.start
        if token.type == tokenize.COMMENT and not lines[row - 1][:column].strip():
            comments[row] = token.string
    return comments


def header_end(source_lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The line of the colon that ends the def's header (its signature may span lines)."""
    first_body = node.body[0].lineno
    text = "\n".join(source_lines[node.lineno - 1:first_body]) + "\n"
    depth = 0
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type != tokenize.OP:
            continue
        if token.string in "([{":
            depth += 1
        elif token.string in ")]}":
            depth -= 1
        elif token.string == ":" and depth == 0:
            return node.lineno + token.start[0] - 1
    raise AssertionError(f"no end of header found for {node.name} at line {node.lineno}")


def is_long_mark(comment: str | None) -> bool:
    """`# long: <why>`; the reason must not be empty."""
    return bool(comment) and comment.startswith(LONG_MARK) and bool(comment[len(LONG_MARK):].strip())


def explained(source_lines: list[str], comments: dict[int, str],
              node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    top = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
    if is_long_mark(comments.get(top - 1)) or is_long_mark(comments.get(node.lineno - 1)):
        return True  # above the decorators, or between them and the def
    line = header_end(source_lines, node) + 1
    while line <= len(source_lines) and not source_lines[line - 1].strip():
        line += 1
    return is_long_mark(comments.get(line))


def functions(path: Path, root: Path = REPO) -> list[Function]:
    source = path.read_text(encoding="utf-8")
    source_lines = source.splitlines()
    comments = own_line_comments(source)
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                found.append(Function(relative(path, root), name, child.end_lineno - child.lineno + 1,
                                      explained(source_lines, comments, child)))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=str(path)), "")
    return found


def long_modules() -> dict[str, int]:
    sizes = {relative(path): module_lines(path.read_text(encoding="utf-8"))
             for path in package_modules()}
    return {path: size for path, size in sizes.items() if size > MAX_MODULE_LINES}


def long_functions() -> dict[tuple[str, str], int]:
    """Functions over the limit without a `# long:` comment; two of one name keep the longest."""
    found: dict[tuple[str, str], int] = {}
    for path in package_modules():
        for function in functions(path):
            if function.lines > MAX_FUNCTION_LINES and not function.explained:
                key = (function.path, function.name)
                found[key] = max(found.get(key, 0), function.lines)
    return found


def test_the_package_is_scanned():
    paths = {relative(path) for path in package_modules()}
    assert "qtool/__init__.py" in paths and len(paths) > 20
    assert any(function.name == "main" for function in functions(PACKAGE / "cli" / "main.py"))


def test_no_module_is_over_400_lines():
    found = long_modules()
    assert not found, (f"modules over {MAX_MODULE_LINES} lines (split them by what they do): "
                     f"{dict(sorted(found.items()))}")


def test_no_function_is_over_60_lines_without_a_reason():
    found = {f"{path}::{name}": size for (path, name), size in long_functions().items()}
    assert not found, (f"functions over {MAX_FUNCTION_LINES} lines (split them, or put a "
                     f"'{LONG_MARK} <why>' comment right above the def or on the first line of "
                     f"its body): {dict(sorted(found.items()))}")


def test_a_long_comment_right_above_or_at_the_top_of_the_body_explains_a_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(70))
    source = (
        "# long: one table, read top to bottom\n"
        "def above():\n" + body +
        "\n"
        "@staticmethod\n"
        "# long: between the decorator and the def\n"
        "def below_the_decorator():\n" + body +
        "\n"
        "@staticmethod\n"
        "def on_the_first_line(\n"
        "    a,\n"
        "    b,\n"
        "):\n"
        "    # long: the steps share many locals\n" + body +
        "\n"
        "def unexplained():\n"
        "    # long:\n"
        "    x = 0\n"
        "    # long: too late, not the first line of the body\n" + body +
        "\n"
        "class Holder:\n"
        "    def method(self):\n"
        "        def inner():\n" + "".join(f"            y{i} = {i}\n" for i in range(70)) +
        "        return inner\n"
    )
    path = tmp_path / "sample.py"
    path.write_text(source)
    found = {function.name: function for function in functions(path, root=tmp_path)}
    assert set(found) == {"above", "below_the_decorator", "on_the_first_line", "unexplained",
                          "Holder.method", "Holder.method.inner"}
    assert found["above"].explained and found["below_the_decorator"].explained
    assert found["on_the_first_line"].explained
    assert not found["unexplained"].explained
    assert found["Holder.method.inner"].lines == 71
    assert found["Holder.method"].lines == 73
    assert not found["Holder.method"].explained


# -- tests import only shared helpers --------------------------------------------------------------

def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every module an import in `path` may load, relative ones resolved;
    for `from a import b`, both a and a.b (b may be a module)."""
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def is_test_module(name: str) -> bool:
    """A module of the test tree that is neither a shared helper nor a conftest."""
    if name.rpartition(".")[2] == "conftest":
        return False
    if any(name == shared or name.startswith(shared + ".") for shared in SHARED_TEST_MODULES):
        return False
    return any(name == package or name.startswith(package + ".") for package in TEST_PACKAGES)


def imports_of_test_modules(paths) -> list[str]:
    found = []
    for path in paths:
        for line, name in imported_modules(path):
            if is_test_module(name):
                found.append(f"{relative(path)}:{line} imports {name}")
    return found


def test_no_test_module_imports_another_test_module():
    paths = sorted(TESTS.rglob("*.py"))
    assert len(paths) > 50
    found = imports_of_test_modules(paths)
    assert not found, ("tests share code through tests/helpers, tests/tiny_models.py or a "
                       f"conftest.py fixture, never by importing a test module: {found}")


def test_the_import_scan_refuses_test_modules_and_allows_helpers():
    assert is_test_module("tests.unit.quantize.test_api")
    assert is_test_module("tests.cli")  # from tests.cli import test_pipeline_cli
    assert is_test_module("tests.cli.test_pipeline_cli")
    assert is_test_module("tests.scripts.test_prepare_model")
    assert is_test_module("tests.gpu.test_tensorrt_gpu")
    assert not is_test_module("tests.helpers.models")
    assert not is_test_module("tests.tiny_models")
    assert not is_test_module("tests.conftest")
    assert not is_test_module("tests.gpu.conftest")
    assert not is_test_module("qtool.cli.main")
