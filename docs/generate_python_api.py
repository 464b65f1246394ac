#!/usr/bin/env python3
"""Generate docs/python-api.md, the reference of the llmds Python package.

    python3 docs/generate_python_api.py                      # rewrite docs/python-api.md
    python3 docs/generate_python_api.py --check              # exit 1, naming what differs, if stale
    python3 docs/generate_python_api.py --missing-docstrings # JSON list of documented names without
                                                             # a docstring; exit 1 if there are any

What is documented: every public module of the package, found by walking python/llmds with pkgutil
(names with a component starting with ``_`` are private; ``llmds.cli`` and ``llmds.__main__`` are
the command line and get one line). For each module: its docstring, then each public name, from
``__all__`` in that order when the module defines it, otherwise the classes and functions the
module itself defines, sorted. For a class: its constructor signature, docstring, and its public
methods, static methods and properties (plus the special methods ``len()``, ``in``, ``with``,
iteration and calls use), each with its signature and docstring.

Where the text comes from:

* the Python sources are the checkout's (python/llmds), so an edited docstring shows up without a
  reinstall; the compiled ``llmds._core`` is the installed one (``pip install .`` builds it), found
  beside the installed package;
* signatures of C++ classes and functions come from the stubs, python/llmds/_core.pyi, parsed with
  ``ast`` (exact types, ``/`` for parameters pybind11 leaves unnamed); their docstrings come from
  the runtime objects, the signature line pybind11 puts first removed, and from the stub when the
  binding has none;
* pure-Python signatures come from ``inspect.signature``, docstrings from the objects (module
  attributes: the string literal under the assignment, as Sphinx reads it);
* TypedDicts and aliases that only the stub defines (the shapes ``stats()`` returns) close the page.

The output depends only on these sources: names are in ``__all__`` order or sorted, members sorted,
and default values that would print a memory address are shown by name.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import pkgutil
import re
import sys
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path, PurePath
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "python" / "llmds"
STUB = SOURCE / "_core.pyi"
OUTPUT = ROOT / "docs" / "python-api.md"
PACKAGE = "llmds"
CORE = "llmds._core"
# Modules that are not API: the command line (mentioned in one line) and `python -m llmds`.
# The CLI's parts, and two benchmark scripts that need what the package does not install at import
# (torch and the MiniLM model; Debian's Xapian bindings): their docstrings say how to run them.
NOT_API = {"llmds.cli", "llmds.__main__", "llmds.benchmarks.hybrid_minilm", "llmds.benchmarks.xapian_reference"}
# Special methods that belong to a class's interface: len(x), `in`, `with`, iteration, calls.
PROTOCOL_DUNDERS = {
    "__call__",
    "__contains__",
    "__enter__",
    "__exit__",
    "__getitem__",
    "__iter__",
    "__len__",
    "__next__",
}
LINE_WIDTH = 88


# --- importing the checkout's package ------------------------------------------------------------


class GeneratorError(Exception):
    """A problem that stops the generator, reported as one message."""


def load_package() -> ModuleType:
    """Import llmds from the checkout's python/llmds, with llmds._core from the installed package.

    The pure-Python modules and the stub are read from the checkout so that the page describes the
    sources next to it; the compiled extension only exists where pip installed (or built) it, so
    the package's search path also lists the installed package's folder, after the checkout's.
    """
    if PACKAGE in sys.modules:
        raise GeneratorError(f"{PACKAGE} is already imported; run the generator in a fresh interpreter")
    sys.dont_write_bytecode = True  # leave no __pycache__ in the checkout
    # Other llmds packages on the path (site-packages, an editable install's finder): where the
    # compiled _core is.
    others: list[str] = []
    specs = [importlib.util.find_spec(PACKAGE)]
    specs += [importlib.machinery.PathFinder.find_spec(PACKAGE, [entry or "."]) for entry in sys.path]
    for found in specs:
        for location in (found.submodule_search_locations or []) if found else []:
            if Path(location).resolve() != SOURCE.resolve() and location not in others:
                others.append(location)
    spec = importlib.util.spec_from_file_location(
        PACKAGE, SOURCE / "__init__.py", submodule_search_locations=[str(SOURCE), *others]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    try:
        spec.loader.exec_module(package)
    except ImportError as error:
        del sys.modules[PACKAGE]
        hint = (
            f"the llmds._core installed in {', '.join(others)} may be older than the checkout"
            if others
            else "no installed llmds provides llmds._core"
        )
        raise GeneratorError(
            f"cannot import the checkout's llmds ({error}); {hint}: run `pip install .` in {ROOT}"
        ) from error
    return package


def public_modules(package: ModuleType) -> list[ModuleType]:
    """The package and its public submodules, found with pkgutil in the checkout's folders, sorted."""
    names = [PACKAGE]

    def walk(path: list[str], prefix: str) -> None:
        for info in pkgutil.iter_modules(path, prefix):
            if info.name in NOT_API or any(part.startswith("_") for part in info.name.split(".")):
                continue
            names.append(info.name)
            if info.ispkg:
                sub = importlib.import_module(info.name)
                walk([p for p in sub.__path__ if Path(p).resolve().is_relative_to(SOURCE.resolve())], info.name + ".")

    walk([str(SOURCE)], PACKAGE + ".")
    modules = []
    for name in sorted(names):
        try:
            modules.append(importlib.import_module(name))
        except ImportError as error:
            raise GeneratorError(f"cannot import {name}: {error}") from error
    return modules


# --- the stub --------------------------------------------------------------------------------------


def attribute_docstrings(body: list[ast.stmt]) -> dict[str, str]:
    """Docstrings written as a string literal right under an assignment (Sphinx's convention)."""
    docs = {}
    for node, following in zip(body, body[1:]):
        if not (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            continue
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            docs[node.targets[0].id] = inspect.cleandoc(following.value.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


@dataclass
class Stub:
    """What _core.pyi declares: classes, functions and annotated attributes by name."""

    classes: dict[str, ast.ClassDef]
    functions: dict[str, list[ast.FunctionDef]]
    attributes: dict[str, ast.AnnAssign]
    attribute_docs: dict[str, str]
    types: list[ast.stmt]  # TypedDicts, aliases and TypeVars: stub-only names used in signatures
    text: str

    def code(self, node: ast.AST | None) -> str:
        """A node's source as written in the stub (quotes and spelling kept), on one line."""
        if node is None:
            return ""
        segment = ast.get_source_segment(self.text, node)
        if segment is None:
            return ast.unparse(node)
        if "\n" not in segment:
            return segment
        segment = re.sub(r"\s*\n\s*", " ", segment)
        return re.sub(r",? ([)\]])", r"\1", re.sub(r"([(\[]) ", r"\1", segment))

    @classmethod
    def parse(cls, path: Path) -> Stub:
        if not path.is_file():
            raise GeneratorError(f"{path} is missing")
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        classes: dict[str, ast.ClassDef] = {}
        functions: dict[str, list[ast.FunctionDef]] = {}
        attributes: dict[str, ast.AnnAssign] = {}
        types: list[ast.stmt] = []
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                if any(ast.unparse(base) == "TypedDict" for base in node.bases):
                    types.append(node)
                else:
                    classes[node.name] = node
            elif isinstance(node, ast.FunctionDef):
                functions.setdefault(node.name, []).append(node)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                attributes[node.target.id] = node
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                types.append(node)
        return cls(classes, functions, attributes, attribute_docstrings(tree.body), types, text)

    def members(self, class_name: str) -> dict[str, list[ast.FunctionDef]]:
        """The methods of a stub class by name (a property's getter and setter under one name)."""
        members: dict[str, list[ast.FunctionDef]] = {}
        node = self.classes.get(class_name)
        for item in node.body if node else []:
            if isinstance(item, ast.FunctionDef):
                members.setdefault(item.name, []).append(item)
        return members


# --- signatures ------------------------------------------------------------------------------------


def decorator_names(node: ast.FunctionDef) -> set[str]:
    return {ast.unparse(d) for d in node.decorator_list}


def ast_parameters(stub: Stub, args: ast.arguments, drop_first: bool) -> list[str]:
    """Parameter texts of a stub function, in order, with the `/` and `*` markers."""
    positional = [(a, True) for a in args.posonlyargs] + [(a, False) for a in args.args]
    first_default = len(positional) - len(args.defaults)
    items = [
        (a, args.defaults[i - first_default] if i >= first_default else None, posonly)
        for i, (a, posonly) in enumerate(positional)
    ]
    if drop_first and items:
        items.pop(0)

    def text(a: ast.arg, default: ast.expr | None, prefix: str = "") -> str:
        out = prefix + a.arg + (f": {stub.code(a.annotation)}" if a.annotation else "")
        if default is not None:
            out += (" = " if a.annotation else "=") + stub.code(default)
        return out

    params = []
    for index, (a, default, posonly) in enumerate(items):
        params.append(text(a, default))
        if posonly and (index + 1 == len(items) or not items[index + 1][2]):
            params.append("/")
    if args.vararg:
        params.append(text(args.vararg, None, "*"))
    elif args.kwonlyargs:
        params.append("*")
    for a, default in zip(args.kwonlyargs, args.kw_defaults):
        params.append(text(a, default))
    if args.kwarg:
        params.append(text(args.kwarg, None, "**"))
    return params


def format_annotation(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def format_default(value: Any) -> str:
    """A default value as source-like text, never with a memory address in it."""
    if isinstance(value, PurePath):
        return f"Path({str(value)!r})"
    if inspect.isroutine(value) or inspect.isclass(value):
        module = getattr(value, "__module__", None)
        name = getattr(value, "__qualname__", getattr(value, "__name__", repr(value)))
        return name if module in (None, "builtins") else f"{module}.{name}"
    text = repr(value)
    if re.search(r" at 0x[0-9a-fA-F]+", text):
        return f"<{type(value).__name__}>"
    return text


def signature_parameters(signature: inspect.Signature, drop_first: bool) -> tuple[list[str], str | None]:
    """Parameter texts (with `/` and `*` markers) and the return annotation of an inspect.Signature."""
    parameters = list(signature.parameters.values())
    if drop_first and parameters:
        parameters = parameters[1:]
    params: list[str] = []
    star_done = False
    for index, p in enumerate(parameters):
        if p.kind is p.KEYWORD_ONLY and not star_done:
            params.append("*")
            star_done = True
        prefix = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        if p.kind is p.VAR_POSITIONAL:
            star_done = True
        text = prefix + p.name
        if p.annotation is not p.empty:
            text += ": " + format_annotation(p.annotation)
        if p.default is not p.empty:
            text += (" = " if p.annotation is not p.empty else "=") + format_default(p.default)
        params.append(text)
        following = parameters[index + 1] if index + 1 < len(parameters) else None
        if p.kind is p.POSITIONAL_ONLY and (following is None or following.kind is not p.POSITIONAL_ONLY):
            params.append("/")
    returns = None
    if signature.return_annotation is not signature.empty:
        returns = format_annotation(signature.return_annotation)
    return params, returns


def format_signature(head: str, params: list[str] | None, returns: str | None = None) -> str:
    """`head(params) -> returns` on one line, or one parameter per line when that is too long."""
    if params is None:
        return head
    tail = f" -> {returns}" if returns else ""
    line = f"{head}({', '.join(params)}){tail}"
    if len(line) <= LINE_WIDTH or not params:
        return line
    return f"{head}(\n" + "".join(f"    {p},\n" for p in params) + f"){tail}"


PYBIND_SELF = re.compile(r"^self(: [\w.]+)?(, )?")


def pybind_signature(name: str, doc: str | None) -> tuple[list[str], str | None] | None:
    """The parameters and return type in the signature line pybind11 writes first in a docstring."""
    first = (doc or "").lstrip("\n").split("\n", 1)[0]
    match = re.match(rf"^{re.escape(name)}\((.*)\)(?: -> (.+))?$", first)
    if not match:
        return None
    inner = PYBIND_SELF.sub("", match.group(1).replace(CORE + ".", ""))
    returns = match.group(2).replace(CORE + ".", "") if match.group(2) else None
    return ([inner] if inner else []), returns


def strip_pybind_signature(name: str, doc: str | None) -> str:
    """A runtime docstring without the `name(...) -> ...` line pybind11 puts first, cleaned."""
    if not doc:
        return ""
    text = doc.lstrip("\n")
    first, _, rest = text.partition("\n")
    if re.match(rf"^{re.escape(name)}\(.*\)( -> .+)?$", first):
        text = rest
    return inspect.cleandoc(text).strip()


def own_docstring(obj: Any) -> str:
    """The object's own docstring, cleaned; '' when it has none (no inheritance from base classes)."""
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str):
        return ""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
        if not isinstance(doc, str):
            return ""
        if is_dataclass(obj) and doc.startswith(obj.__name__ + "("):
            return ""  # dataclasses write the signature as the docstring of a class without one
    return inspect.cleandoc(doc).strip()


# --- the model of the page -------------------------------------------------------------------------


@dataclass
class Member:
    """A method, static method, property or special method of a class."""

    name: str
    kind: str  # "method", "static method", "class method", "property", "special method"
    signature: str
    doc: str
    origin: str  # "python" or "c++"
    qualname: str  # where the object is defined: llmds.progress.Progress.update, llmds._core.HNSW.add
    note: str = ""


@dataclass
class Entry:
    """One public name of a module."""

    module: str
    name: str
    kind: str  # "class", "function" or "data"
    signature: str
    doc: str
    origin: str
    qualname: str
    notes: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    members_elsewhere: list[str] = field(default_factory=list)  # modules whose entry lists the members
    also_in: list[str] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class ModuleDoc:
    name: str
    doc: str
    entries: list[Entry]


def is_core(obj: Any) -> bool:
    return getattr(obj, "__module__", None) == CORE


def public_names(module: ModuleType) -> list[str]:
    """__all__ in its order, or the classes and functions the module defines, sorted."""
    exported = getattr(module, "__all__", None)
    if exported is not None:
        missing = [name for name in exported if not hasattr(module, name)]
        if missing:
            raise GeneratorError(f"{module.__name__}.__all__ lists {', '.join(missing)}, which it does not define")
        return list(exported)
    return sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isroutine(obj))
        and getattr(obj, "__module__", None) == module.__name__
    )


class Builder:
    """Builds the ModuleDocs of the page from the imported modules and the stub."""

    def __init__(self, modules: list[ModuleType], stub: Stub) -> None:
        self.modules = modules
        self.stub = stub
        self.core = sys.modules[CORE]
        self.source_attribute_docs: dict[str, dict[str, str]] = {}
        # Module attributes as written in the sources: name -> "NAME: annotation = value".
        self.source_assignments: dict[str, dict[str, str]] = {}
        for module in modules:
            docs: dict[str, str] = {}
            values: dict[str, str] = {}
            path = getattr(module, "__file__", None)
            if path and path.endswith(".py"):
                text = Path(path).read_text(encoding="utf-8")
                tree = ast.parse(text)
                docs = attribute_docstrings(tree.body)

                def code(node: ast.AST) -> str:
                    return " ".join((ast.get_source_segment(text, node) or ast.unparse(node)).split())

                for node in tree.body:
                    if isinstance(node, ast.Assign) and len(node.targets) == 1:
                        target = node.targets[0]
                        if isinstance(target, ast.Name):
                            values[target.id] = f"{target.id} = {code(node.value)}"
                    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                        values[node.target.id] = f"{node.target.id}: {code(node.annotation)}" + (
                            f" = {code(node.value)}" if node.value else ""
                        )
            self.source_attribute_docs[module.__name__] = docs
            self.source_assignments[module.__name__] = values
        # Which public modules export each object (by identity), for cross references.
        self.exporters: dict[int, list[str]] = {}
        for module in modules:
            for name in public_names(module):
                self.exporters.setdefault(id(getattr(module, name)), []).append(module.__name__)

    def build(self) -> list[ModuleDoc]:
        return [
            ModuleDoc(m.__name__, own_docstring(m), [self.entry(m, name) for name in public_names(m)])
            for m in self.modules
        ]

    # -- entries --

    def entry(self, module: ModuleType, name: str) -> Entry:
        obj = getattr(module, name)
        exporters = self.exporters.get(id(obj), [module.__name__])
        also_in = [m for m in exporters if m != module.__name__]
        if inspect.isclass(obj):
            entry = self.class_entry(module.__name__, name, obj)
            submodules = [m for m in also_in if m != PACKAGE]
            if module.__name__ == PACKAGE and submodules:
                # The package re-exports the submodules' names for convenience: the members are
                # listed once, under the submodule(s).
                entry.members = []
                entry.members_elsewhere = submodules
        elif inspect.isroutine(obj):
            entry = self.function_entry(module.__name__, name, obj)
        else:
            entry = self.data_entry(module.__name__, name, obj)
        entry.also_in = also_in
        return entry

    def function_entry(self, module: str, name: str, obj: Any) -> Entry:
        if is_core(obj):
            real = obj.__name__
            stubbed = self.stub.functions.get(real)
            if stubbed:
                signature = "\n".join(
                    format_signature(name, ast_parameters(self.stub, f.args, False), self.stub.code(f.returns) or None)
                    for f in stubbed
                )
                stub_doc = next((ast.get_docstring(f) or "" for f in stubbed if ast.get_docstring(f)), "")
            else:
                params, returns = pybind_signature(real, obj.__doc__) or (None, None)
                signature, stub_doc = format_signature(name, params, returns), ""
            doc = strip_pybind_signature(real, obj.__doc__) or stub_doc
            return Entry(module, name, "function", signature, doc, "c++", f"{CORE}.{real}")
        try:
            params, returns = self.python_signature(obj, drop_first=False)
        except (TypeError, ValueError):  # a builtin without signature metadata
            params, returns = ["..."], None
        return Entry(
            module,
            name,
            "function",
            format_signature(name, params, returns),
            own_docstring(obj),
            "python",
            f"{obj.__module__}.{obj.__qualname__}",
            [CONTEXT_MANAGER_NOTE] if is_context_manager(obj) else [],
        )

    def data_entry(self, module: str, name: str, obj: Any) -> Entry:
        core_value = vars(self.core).get(name, self.core) is obj
        if core_value and name in self.stub.attributes:
            node = self.stub.attributes[name]
            signature = f"{name}: {self.stub.code(node.annotation)}"
            doc = self.stub.attribute_docs.get(name, "")
            return Entry(module, name, "data", signature, doc, "c++", f"{CORE}.{name}")
        # Defined in Python: the assignment as written, and the string literal under it.
        for source in [module] + sorted(self.exporters.get(id(obj), [])):
            if name in self.source_assignments.get(source, {}):
                text = self.source_assignments[source][name]
                if len(text) > LINE_WIDTH:
                    text = f"{name}: {type_name(obj)}"
                doc = self.source_attribute_docs[source].get(name, "")
                return Entry(module, name, "data", text, doc, "python", f"{source}.{name}")
        origin = "c++" if core_value else "python"
        return Entry(module, name, "data", f"{name}: {type_name(obj)}", "", origin, f"{module}.{name}")

    def class_entry(self, module: str, name: str, cls: type) -> Entry:
        if is_core(cls):
            return self.core_class_entry(module, name, cls)
        params: list[str] | None
        try:
            params, _ = self.python_signature(cls, drop_first=False)
        except (TypeError, ValueError):
            params = None
        notes = []
        bases = [b for b in cls.__bases__ if b is not object]
        if bases:
            notes.append("Bases: " + ", ".join(f"`{b.__module__}.{b.__qualname__}`" for b in bases))
        if is_dataclass(cls):
            frozen = cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
            notes.append(
                f"A {'frozen ' if frozen else ''}dataclass: the constructor's parameters are its fields."
            )
        entry = Entry(
            module,
            name,
            "class",
            format_signature(f"class {name}", params),
            own_docstring(cls),
            "python",
            f"{cls.__module__}.{cls.__qualname__}",
            notes,
        )
        init = cls.__dict__.get("__init__")
        init_doc = own_docstring(init) if init else ""
        if init_doc:
            entry.doc = f"{entry.doc}\n\n{init_doc}".strip()
        entry.members = self.python_members(cls)
        return entry

    def core_class_entry(self, module: str, name: str, cls: type) -> Entry:
        real = cls.__name__
        stub_class = self.stub.classes.get(real)
        stub_members = self.stub.members(real)
        notes = []
        init = stub_members.get("__init__")
        runtime_init = cls.__dict__.get("__init__")
        if init:
            signature = format_signature(f"class {name}", ast_parameters(self.stub, init[0].args, True))
        elif runtime_init is not None and pybind_signature("__init__", runtime_init.__doc__):
            params, _ = pybind_signature("__init__", runtime_init.__doc__)  # type: ignore[misc]
            signature = format_signature(f"class {name}", params)
        else:
            signature = f"class {name}"
            notes.append("Not constructed directly: other objects return it.")
        if stub_class is not None:
            generic = [self.stub.code(b) for b in stub_class.bases if self.stub.code(b).startswith("Generic[")]
            if generic:
                notes.append(f"Generic in its type parameters ({generic[0][len('Generic[') : -1]}) in the stubs.")
        doc = own_docstring(cls) or (ast.get_docstring(stub_class) or "" if stub_class else "")
        init_doc = strip_pybind_signature("__init__", runtime_init.__doc__) if init and runtime_init else ""
        if not init_doc and init:
            init_doc = ast.get_docstring(init[0]) or ""
        if init_doc and init_doc not in doc:
            doc = f"{doc}\n\n{init_doc}".strip()
        entry = Entry(module, name, "class", signature, doc, "c++", f"{CORE}.{real}", notes)
        entry.members = self.core_members(cls, stub_members)
        return entry

    # -- members --

    def core_members(self, cls: type, stub_members: dict[str, list[ast.FunctionDef]]) -> list[Member]:
        members = []
        for name, value in vars(cls).items():
            if name.startswith("_") and name not in PROTOCOL_DUNDERS:
                continue
            qualname = f"{CORE}.{cls.__name__}.{name}"
            nodes = stub_members.get(name, [])
            if isinstance(value, property):
                getter = next((n for n in nodes if "property" in decorator_names(n)), None)
                settable = value.fset is not None or any(
                    d.endswith(".setter") for n in nodes for d in decorator_names(n)
                )
                annotation = self.stub.code(getter.returns) if getter is not None else None
                if annotation is None:
                    parsed = pybind_signature("", (value.fget.__doc__ or "") if value.fget else "")
                    annotation = parsed[1] if parsed else None
                doc = inspect.cleandoc(value.__doc__ or "").strip()
                if not doc and getter is not None:
                    doc = ast.get_docstring(getter) or ""
                kind = "read-write property" if settable else "read-only property"
                signature = f"{name}: {annotation}" if annotation else name
                members.append(Member(name, kind, signature, doc, "c++", qualname))
                continue
            is_static = isinstance(value, staticmethod)
            runtime_doc = getattr(cls, name).__doc__ if is_static else getattr(value, "__doc__", None)
            if nodes:
                static = any("staticmethod" in decorator_names(n) for n in nodes)
                signature = "\n".join(
                    format_signature(
                        name, ast_parameters(self.stub, n.args, not static), self.stub.code(n.returns) or None
                    )
                    for n in nodes
                )
                stub_doc = next((ast.get_docstring(n) for n in nodes if ast.get_docstring(n)), "") or ""
            else:
                params, returns = pybind_signature(name, runtime_doc) or (None, None)
                signature, stub_doc = format_signature(name, params or [], returns), ""
            doc = strip_pybind_signature(name, runtime_doc) or stub_doc
            if name in PROTOCOL_DUNDERS:
                kind = "special method"
            else:
                kind = "static method" if is_static else "method"
            members.append(Member(name, kind, signature, doc, "c++", qualname))
        return sort_members(members)

    def python_members(self, cls: type) -> list[Member]:
        members = []
        seen: set[str] = set()
        for owner in cls.__mro__:
            if owner is object or not (getattr(owner, "__module__", "") or "").startswith(PACKAGE + "."):
                continue
            for name, value in vars(owner).items():
                if name in seen or (name.startswith("_") and name not in PROTOCOL_DUNDERS):
                    continue
                seen.add(name)
                qualname = f"{owner.__module__}.{owner.__qualname__}.{name}"
                if isinstance(value, property):
                    annotation = None
                    if value.fget is not None:
                        returns = inspect.signature(value.fget).return_annotation
                        if returns is not inspect.Signature.empty:
                            annotation = format_annotation(returns)
                    kind = "read-write property" if value.fset is not None else "read-only property"
                    signature = f"{name}: {annotation}" if annotation else name
                    members.append(Member(name, kind, signature, own_docstring(value), "python", qualname))
                    continue
                if isinstance(value, staticmethod):
                    function, kind, drop = value.__func__, "static method", False
                elif isinstance(value, classmethod):
                    function, kind, drop = value.__func__, "class method", True
                elif inspect.isfunction(value):
                    function, kind, drop = value, "method", True
                else:
                    continue  # class attributes, dataclass field defaults
                if name in PROTOCOL_DUNDERS:
                    kind = "special method"
                params, returns = self.python_signature(function, drop_first=drop)
                members.append(
                    Member(
                        name,
                        kind,
                        format_signature(name, params, returns),
                        own_docstring(function),
                        "python",
                        qualname,
                        CONTEXT_MANAGER_NOTE if is_context_manager(function) else "",
                    )
                )
        return sort_members(members)

    @staticmethod
    def python_signature(obj: Any, drop_first: bool) -> tuple[list[str], str | None]:
        signature = inspect.signature(obj)
        params, returns = signature_parameters(signature, drop_first)
        if inspect.isclass(obj):
            returns = None
        return params, returns


KIND_ORDER = {
    "method": 0,
    "static method": 0,
    "class method": 0,
    "read-write property": 1,
    "read-only property": 1,
    "special method": 2,
}


def sort_members(members: list[Member]) -> list[Member]:
    """Methods, then properties, then special methods; each group sorted by name."""
    return sorted(members, key=lambda m: (KIND_ORDER[m.kind], m.name))


CONTEXT_MANAGER_NOTE = "A context manager (`contextlib.contextmanager`): use it in a `with` statement."


def is_context_manager(function: Any) -> bool:
    """Whether a function is a generator wrapped by contextlib.contextmanager."""
    wrapped = getattr(function, "__wrapped__", None)
    return wrapped is not None and inspect.isgeneratorfunction(wrapped) and not inspect.isgeneratorfunction(function)


# What Python makes of a special method, for those without a docstring.
PROTOCOL_USE = {
    "__call__": "Called as `obj(...)`.",
    "__contains__": "Supports `item in obj`.",
    "__enter__": "Supports `with obj:` (entering).",
    "__exit__": "Supports `with obj:` (leaving).",
    "__getitem__": "Supports `obj[key]`.",
    "__iter__": "Supports iteration, `for item in obj`.",
    "__len__": "Supports `len(obj)`.",
    "__next__": "Supports `next(obj)`.",
}


def type_name(obj: Any) -> str:
    if isinstance(obj, PurePath):
        return "Path"
    return type(obj).__qualname__


# --- Markdown ----------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def heading(level: int, text: str, key: str | None = None) -> str:
    """A heading line; with a key, links made by link(key) lead to it."""
    return f"{'#' * level} {text}" + (f"\x01{key}" if key else "")


def link(text: str, key: str) -> str:
    return f"[{text}](#\x00{key}\x00)"


def resolve_anchors(lines: list[str]) -> list[str]:
    """Give each keyed heading the anchor GitHub will give it (a repeated slug gets -1, -2, ... in
    the order of the page), and point the links at them."""
    anchors: dict[str, str] = {}
    occurrences: dict[str, int] = {}
    fenced = False
    out = []
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            text, _, key = line.partition("\x01")
            base = anchor = slug(text.lstrip("#"))
            while anchor in occurrences:
                occurrences[base] += 1
                anchor = f"{base}-{occurrences[base]}"
            occurrences[anchor] = 0
            if key:
                anchors[key] = anchor
            line = text
        out.append(line)
    try:
        return [re.sub("\x00(.*?)\x00", lambda m: anchors[m.group(1)], line) for line in out]
    except KeyError as error:
        raise GeneratorError(f"a link to {error} has no heading") from error


def escape_outside_code(line: str) -> str:
    """Escape `<` (an HTML tag to Markdown) outside backtick code spans."""
    parts = re.split(r"(`+[^`]*?`+)", line)
    return "".join(part if part.startswith("`") else part.replace("<", "&lt;") for part in parts)


def markdown_docstring(doc: str) -> str:
    """A docstring as Markdown: reST `::` literal blocks become indented code blocks, `<` is escaped."""
    out = []
    for line in doc.splitlines():
        stripped = line.rstrip()
        if stripped.strip() == "::":
            continue  # a `::` alone introduces the literal block that follows
        if stripped.endswith("::"):
            stripped = stripped[:-1]
        if len(stripped) - len(stripped.lstrip(" ")) >= 4:
            out.append(stripped)  # an indented code block
        else:
            out.append(escape_outside_code(stripped))
    return "\n".join(out).strip()


def code_block(text: str) -> list[str]:
    return ["```python", text, "```", ""]


def render(modules: list[ModuleDoc], stub: Stub) -> str:
    lines = [
        heading(1, "Python API reference"),
        "",
        "<!-- Generated by docs/generate_python_api.py; do not edit. Regenerate with",
        "     `python3 docs/generate_python_api.py`; `--check` tells whether this page is current. -->",
        "",
        "Every public module of the `llmds` package, each public class and function with its signature",
        "and docstring. Signatures of the compiled classes and functions (`llmds._core`) are the ones",
        "of the type stubs, `llmds/_core.pyi`; parameters before a `/` can only be passed by position.",
        "The shapes of the dictionaries that `stats()` methods return are listed at the end,",
        link("Types used in signatures", "types") + ".",
        "",
        "The command line, `llmds` or `python -m llmds` (module `llmds.cli`), is not covered here:",
        "`llmds --help` describes its commands.",
        "",
        heading(2, "Contents"),
        "",
    ]
    for module in modules:
        names = ", ".join(link(f"`{e.name}`", e.full_name) for e in module.entries)
        lines.append(f"- {link(f'`{module.name}`', 'module ' + module.name)}" + (f": {names}" if names else ""))
    lines.append(f"- {link('Types used in signatures', 'types')}")
    lines.append("")

    for module in modules:
        lines += [heading(2, f"Module `{module.name}`", "module " + module.name), ""]
        if module.doc:
            lines += [markdown_docstring(module.doc), ""]
        if not module.entries:
            lines += ["This module has no public names.", ""]
        for entry in module.entries:
            lines += render_entry(entry)

    lines += [
        heading(2, "Types used in signatures", "types"),
        "",
        "Names that only the stubs (`llmds/_core.pyi`) define, for type checkers: they cannot be",
        "imported at run time. The TypedDicts are the dictionaries the `stats()` methods return.",
        "",
    ]
    for node in sorted(stub.types, key=stub_type_name):
        lines += [f"### `{stub_type_name(node)}`", ""]
        doc = ast.get_docstring(node) if isinstance(node, ast.ClassDef) else None
        if doc:
            lines += [markdown_docstring(inspect.cleandoc(doc)), ""]
        lines += code_block(stub_type_source(stub, node))
    return "\n".join(resolve_anchors(lines)).rstrip() + "\n"


def stub_type_name(node: ast.stmt) -> str:
    if isinstance(node, ast.ClassDef):
        return node.name
    assert isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    return node.targets[0].id


def stub_type_source(stub: Stub, node: ast.stmt) -> str:
    if isinstance(node, ast.ClassDef):
        body = [
            item
            for item in node.body
            if not (isinstance(item, ast.Expr) and isinstance(item.value, ast.Constant))
        ]
        head = f"class {node.name}({', '.join(stub.code(b) for b in node.bases)}):"
        return "\n".join([head] + [f"    {stub.code(item)}" for item in body])
    return stub.code(node)


def render_entry(entry: Entry) -> list[str]:
    lines = [heading(3, f"`{entry.full_name}`", entry.full_name), ""]
    signature = entry.signature
    if entry.kind == "function":
        signature = "\n".join(
            ("def " + s if not s.startswith(" ") and not s.startswith(")") else s) for s in signature.split("\n")
        )
    lines += code_block(signature)
    if entry.doc:
        lines += [markdown_docstring(entry.doc), ""]
    for note in entry.notes:
        lines += [note, ""]
    if entry.also_in:
        lines += ["Also importable from " + ", ".join(f"`{m}`" for m in entry.also_in) + ".", ""]
    if entry.members_elsewhere:
        links = " and ".join(link(f"`{m}.{entry.name}`", f"{m}.{entry.name}") for m in entry.members_elsewhere)
        lines += [f"Its methods and properties are listed under {links}.", ""]
    for member in entry.members:
        lines += [f"#### `{entry.name}.{member.name}`", ""]
        signature = member.signature
        if member.kind in ("read-write property", "read-only property"):
            lines += [f"*{member.kind}*", ""]
        elif member.kind in ("static method", "class method"):
            decorator = "@staticmethod" if member.kind == "static method" else "@classmethod"
            signature = "\n".join(f"{decorator}\n{s}" for s in split_overloads(signature))
        lines += code_block(signature)
        if member.doc:
            lines += [markdown_docstring(member.doc), ""]
        elif member.kind == "special method":
            lines += [PROTOCOL_USE[member.name], ""]
        if member.note:
            lines += [member.note, ""]
    return lines


def split_overloads(signature: str) -> list[str]:
    """The signatures of an overloaded name, each possibly spread over several lines."""
    out: list[str] = []
    for line in signature.split("\n"):
        if out and (line.startswith(" ") or line.startswith(")")):
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


# --- what lacks a docstring, and --check -------------------------------------------------------------


def missing_docstrings(modules: list[ModuleDoc]) -> list[dict[str, str]]:
    """Documented names with an empty docstring, each once by where it is defined.

    Special methods are left out: Python defines what len(), `in`, `with` and iteration mean.
    """
    missing: dict[str, dict[str, str]] = {}
    for module in modules:
        if not module.doc:
            missing[module.name] = {"name": module.name, "kind": "module", "origin": "python"}
        for entry in module.entries:
            if not entry.doc:
                missing.setdefault(
                    entry.qualname, {"name": entry.qualname, "kind": entry.kind, "origin": entry.origin}
                )
            for member in entry.members:
                if not member.doc and member.kind != "special method":
                    missing.setdefault(
                        member.qualname, {"name": member.qualname, "kind": member.kind, "origin": member.origin}
                    )
    return [missing[key] for key in sorted(missing)]


def sections(text: str) -> dict[str, str]:
    """The page split at its module (`## `) and name (`### `) headings, by heading text."""
    result: dict[str, str] = {}
    current = "(top of the page)"
    fenced = False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (line.startswith("## ") or line.startswith("### ")):
            current = line.lstrip("#").strip().replace("`", "")
        result[current] = result.get(current, "") + line
    return result


def describe_difference(current: str, expected: str) -> str:
    """Which sections differ, and the start of a unified diff."""
    old, new = sections(current), sections(expected)
    changes = []
    for name in list(new) + [n for n in old if n not in new]:
        if name not in old:
            changes.append(f"  {name}: missing from the page")
        elif name not in new:
            changes.append(f"  {name}: on the page but no longer generated")
        elif old[name] != new[name]:
            changes.append(f"  {name}: differs")
    diff = list(
        difflib.unified_diff(
            current.splitlines(),
            expected.splitlines(),
            "docs/python-api.md (on disk)",
            "docs/python-api.md (generated)",
            lineterm="",
            n=1,
        )
    )
    shown = diff[:60]
    if len(diff) > len(shown):
        shown.append(f"... ({len(diff) - len(shown)} more diff lines)")
    return "\n".join(["what differs:", *changes, "", *shown])


def generate() -> tuple[str, list[ModuleDoc]]:
    stub = Stub.parse(STUB)
    package = load_package()
    modules = Builder(public_modules(package), stub).build()
    return render(modules, stub), modules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if docs/python-api.md is not current")
    mode.add_argument(
        "--missing-docstrings",
        action="store_true",
        help="print the documented names without a docstring as JSON; exit 1 if there are any",
    )
    args = parser.parse_args(argv)
    try:
        text, modules = generate()
    except GeneratorError as error:
        print(f"generate_python_api.py: {error}", file=sys.stderr)
        return 2
    relative = OUTPUT.relative_to(ROOT)
    if args.missing_docstrings:
        missing = missing_docstrings(modules)
        print(json.dumps(missing, indent=1))
        return 1 if missing else 0
    if args.check:
        if not OUTPUT.is_file():
            print(f"{relative} does not exist; run `python3 docs/generate_python_api.py`", file=sys.stderr)
            return 1
        current = OUTPUT.read_text(encoding="utf-8")
        if current != text:
            print(
                f"{relative} is stale: it no longer matches the package; "
                "run `python3 docs/generate_python_api.py` to rewrite it.\n" + describe_difference(current, text),
                file=sys.stderr,
            )
            return 1
        print(f"{relative} is current")
        return 0
    if OUTPUT.is_file() and OUTPUT.read_text(encoding="utf-8") == text:
        print(f"{relative} is already current")
    else:
        OUTPUT.write_text(text, encoding="utf-8")
        print(f"wrote {relative} ({sum(len(m.entries) for m in modules)} names in {len(modules)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
