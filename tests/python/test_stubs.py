"""llmds/_core.pyi against the compiled llmds._core it describes.

The stub is written by hand, so nothing keeps it in step with python/src/*.cpp: a method added,
renamed or removed in a binding, or a parameter renamed, would leave type checkers and IDEs
describing an API that no longer exists. These tests read the stub that ships in the installed
package (importlib.resources, the same file pip puts next to _core's shared library) with `ast`
and compare it with the runtime module:

* every public class and function of llmds._core is declared in the stub, and vice versa;
* each class declares exactly the runtime's public methods and properties (names without a
  leading underscore, plus __len__, __contains__, __enter__ and __exit__ where the runtime has
  them), with properties as @property and static methods as @staticmethod;
* every method the stub declares exists at runtime, with the same parameters (excluding self):
  names, kinds and which ones have defaults, read from the pybind11 signature on the first line
  of the runtime __doc__. Parameters pybind11 leaves unnamed (arg0, arg1, ...) can only be passed
  positionally, so the stub must declare them positional-only (before `/`) under any name.

Types are not compared: pybind11's runtime annotations (object, list, dict) are deliberately
looser than the stub's.
"""

from __future__ import annotations

import ast
import importlib.resources
import inspect
import re
from typing import Any, NamedTuple

import pytest

import llmds._core as core

PACKAGE = importlib.resources.files("llmds")
STUB = PACKAGE / "_core.pyi"

# Special methods that are part of a class's public interface (len(x), `in`, `with`).
PUBLIC_DUNDERS = {"__len__", "__contains__", "__enter__", "__exit__"}

RUNTIME_CLASSES = sorted(
    name for name, obj in vars(core).items() if not name.startswith("_") and inspect.isclass(obj)
)
RUNTIME_FUNCTIONS = sorted(
    name
    for name, obj in vars(core).items()
    if not name.startswith("_") and callable(obj) and not inspect.isclass(obj)
)


class Param(NamedTuple):
    """One parameter as callers see it. name is None for positional-only parameters."""

    kind: str  # positional-only, positional-or-keyword, keyword-only, *args, **kwargs
    name: str | None
    has_default: bool


def is_public(name: str) -> bool:
    return not name.startswith("_") or name in PUBLIC_DUNDERS


# --- the stub ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub() -> ast.Module:
    if not STUB.is_file():
        pytest.fail(f"{STUB} is missing: the installed llmds predates the stub; reinstall it")
    return ast.parse(STUB.read_text(encoding="utf-8"), filename=str(STUB))


def stub_class(stub: ast.Module, name: str) -> ast.ClassDef:
    for node in stub.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    pytest.fail(f"class {name} is exported by llmds._core but not declared in _core.pyi")


def decorators(node: ast.FunctionDef) -> set[str]:
    return {ast.unparse(d) for d in node.decorator_list}


def stub_members(cls: ast.ClassDef) -> dict[str, ast.FunctionDef | ast.AnnAssign]:
    members: dict[str, ast.FunctionDef | ast.AnnAssign] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            if "overload" in decorators(node) or "typing.overload" in decorators(node):
                pytest.fail(f"{cls.name}.{node.name}: @overload in the stub; extend this test")
            if any(d.endswith(".setter") for d in decorators(node)):
                continue  # the @property getter above it is the member's declaration
            members[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            members[node.target.id] = node
    return members


def stub_params(func: ast.FunctionDef, *, drop_self: bool) -> list[Param]:
    a = func.args
    positional = [(arg, "positional-only") for arg in a.posonlyargs]
    positional += [(arg, "positional-or-keyword") for arg in a.args]
    first_default = len(positional) - len(a.defaults)
    params = [
        Param(kind, None if kind == "positional-only" else arg.arg, i >= first_default)
        for i, (arg, kind) in enumerate(positional)
    ]
    if drop_self:
        params = params[1:]
    if a.vararg:
        params.append(Param("*args", a.vararg.arg, False))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        params.append(Param("keyword-only", arg.arg, default is not None))
    if a.kwarg:
        params.append(Param("**kwargs", a.kwarg.arg, False))
    return params


# --- the runtime (pybind11 signature lines) ------------------------------------------------------

OPENING, CLOSING = "([{<", ")]}>"


def split_top_level(text: str, separator: str) -> list[str]:
    """text split at `separator` outside brackets and quotes (defaults may be reprs)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in OPENING:
            depth += 1
        elif ch in CLOSING:
            depth -= 1
        elif ch == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def signature_line(qualname: str, func: Any) -> str:
    doc = func.__doc__ or ""
    if "Overloaded function." in doc:
        pytest.fail(f"{qualname} is overloaded at runtime; extend this test to compare overloads")
    first = doc.lstrip().splitlines()[0] if doc.strip() else ""
    if "(" not in first:
        pytest.fail(f"{qualname}: no pybind11 signature on the first line of __doc__: {first!r}")
    return first


def parameter_list(line: str) -> str:
    """The text between the first '(' of a signature line and its matching ')'."""
    start = line.index("(")
    depth = 0
    for i in range(start, len(line)):
        if line[i] in OPENING:
            depth += 1
        elif line[i] in CLOSING:
            depth -= 1
            if depth == 0:
                return line[start + 1 : i]
    raise AssertionError(f"unbalanced signature line: {line!r}")


def runtime_params(qualname: str, func: Any, *, drop_self: bool) -> list[Param]:
    text = parameter_list(signature_line(qualname, func))
    raw = [p for p in split_top_level(text, ",") if p]
    params: list[Param] = []
    keyword_only = False
    for i, item in enumerate(raw):
        if item == "/":  # everything before it is positional-only
            params = [Param("positional-only", None, p.has_default) for p in params]
            continue
        if item == "*":
            keyword_only = True
            continue
        match = re.match(r"(\*{0,2})([A-Za-z_]\w*)", item)
        assert match, f"{qualname}: cannot parse parameter {item!r}"
        stars, name = match.groups()
        has_default = len(split_top_level(item, "=")) > 1
        if stars == "*":
            params.append(Param("*args", name, False))
            keyword_only = True
        elif stars == "**":
            params.append(Param("**kwargs", name, False))
        elif keyword_only:
            params.append(Param("keyword-only", name, has_default))
        elif re.fullmatch(r"arg\d+", name):  # no py::arg: cannot be passed by keyword
            params.append(Param("positional-only", None, has_default))
        else:
            params.append(Param("positional-or-keyword", name, has_default))
    if drop_self:
        assert raw and raw[0].startswith("self"), f"{qualname}: expected self first: {text!r}"
        params = params[1:]
    return params


# --- tests ---------------------------------------------------------------------------------------


def test_py_typed_is_installed():
    assert (PACKAGE / "py.typed").is_file(), "llmds is installed without its py.typed marker"


def test_stub_is_installed():
    assert STUB.is_file(), f"{STUB} is missing: reinstall llmds"


def test_module_level_names_match(stub):
    declared_classes = {
        node.name
        for node in stub.body
        if isinstance(node, ast.ClassDef)
        # TypedDicts describe return values; they have no runtime counterpart.
        and not any(ast.unparse(base).endswith("TypedDict") for base in node.bases)
    }
    declared_functions = {node.name for node in stub.body if isinstance(node, ast.FunctionDef)}
    declared_variables = {
        node.target.id
        for node in stub.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    assert {c for c in declared_classes if not c.startswith("_")} == set(RUNTIME_CLASSES)
    assert {f for f in declared_functions if not f.startswith("_")} == set(RUNTIME_FUNCTIONS)
    assert isinstance(core.__version__, str)
    assert "__version__" in declared_variables


@pytest.mark.parametrize("name", RUNTIME_CLASSES)
def test_class_members_match(stub, name):
    runtime = vars(getattr(core, name))
    declared = stub_members(stub_class(stub, name))
    assert {m for m in declared if is_public(m)} == {m for m in runtime if is_public(m)}

    for member, node in declared.items():
        if member not in runtime:
            continue  # a private name the runtime lacks is reported by the signature test
        is_property = isinstance(runtime[member], property)
        is_static = isinstance(runtime[member], staticmethod)
        if isinstance(node, ast.AnnAssign):
            assert not callable(runtime[member]), f"{name}.{member}: a method declared as data"
            continue
        assert ("property" in decorators(node)) == is_property, f"{name}.{member}: @property"
        assert ("staticmethod" in decorators(node)) == is_static, f"{name}.{member}: @staticmethod"


@pytest.mark.parametrize("name", RUNTIME_CLASSES)
def test_method_signatures_match(stub, name):
    cls = getattr(core, name)
    mismatches = []
    for member, node in stub_members(stub_class(stub, name)).items():
        qualname = f"{name}.{member}"
        if member not in vars(cls):
            mismatches.append(f"{qualname}: declared in the stub, absent at runtime")
            continue
        if not isinstance(node, ast.FunctionDef) or isinstance(vars(cls)[member], property):
            continue  # properties have no pybind11 parameter names
        is_static = isinstance(vars(cls)[member], staticmethod)
        expected = runtime_params(qualname, getattr(cls, member), drop_self=not is_static)
        actual = stub_params(node, drop_self=not is_static)
        if actual != expected:
            mismatches.append(f"{qualname}:\n  runtime {expected}\n  stub    {actual}")
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("name", RUNTIME_FUNCTIONS)
def test_function_signatures_match(stub, name):
    nodes = [n for n in stub.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert len(nodes) == 1, f"{name} is exported by llmds._core but not declared once in _core.pyi"
    expected = runtime_params(name, getattr(core, name), drop_self=False)
    assert stub_params(nodes[0], drop_self=False) == expected
