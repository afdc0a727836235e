"""Code dependencies: the source files a stage's command may execute, read from the package's source with :mod:`ast`.

The closure is built over *units*: a module's top-level code, which runs when the module is imported (its imports,
class bodies with their methods, assignments, decorators), and each top-level function, whose body runs only when
it is called. The rules:

- importing a module runs its top-level code and the ``__init__`` of every package above it;
- a unit reaches what it imports: a function imported by name (``from m import f``) is the unit ``m:f``, a module
  imported as an object (``import m``, ``from pkg import m``) is all of ``m`` (the attributes used on it are not
  followed), anything else imported by name is ``m``'s top-level code;
- a unit reaches the functions of its own module that it names (a call, or a function handed on as a value); in the
  CLI package only the functions it *calls*, since each ``register`` hands every command function of its module to
  argparse and the dispatcher runs one of them;
- the dispatcher ``primkd.cli:main`` imports the module of the chosen command only (``primkd.cli.COMMANDS``) and calls
  its ``register``: a command reaches the dispatcher, its own module's ``register`` and its own function.

So an import inside a function counts only where the function is reachable: ``primkd download`` calls
``data.prepare.fetch_sources``, not ``prepare_dataset``, whose import of the scene generator (``data/synthetic.py``)
therefore is no dependency of the download stage. Reaching a function is decided by name, whatever the parameters:
a branch that a source or preset never takes still counts (static analysis cannot know the parameters).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parents[1]
# The dispatcher, and the function of a command's module that it calls (see primkd.cli.main).
DISPATCH, REGISTER = "primkd.cli:main", "register"


@dataclass
class Unit:
    """What one unit (a module's top-level code, or one top-level function) may run: the ``(module, name)`` pairs it
    imports (``name`` None: the module itself, as an object) and the names of its module's functions it reaches."""

    imports: set[tuple[str, str | None]] = field(default_factory=set)
    names: set[str] = field(default_factory=set)


@dataclass
class ModuleInfo:
    """A parsed module: its top-level code and its top-level functions, as :class:`Unit`."""

    name: str
    path: Path
    top: Unit
    functions: dict[str, Unit]

    def imported_modules(self, is_module: Callable[[str], bool]) -> set[str]:
        """Every module it imports, at any level (``from a import b`` counts ``a.b`` when that is a module)."""
        out = set()
        for unit in (self.top, *self.functions.values()):
            out |= {f"{m}.{n}" if n is not None and is_module(f"{m}.{n}") else m for m, n in unit.imports}
        return out


def _is_cli(name: str) -> bool:
    return name == "primkd.cli" or name.startswith("primkd.cli.")


def _unit(nodes: Iterable[ast.AST], package: str, is_module: Callable[[str], bool], calls_only: bool) -> Unit:
    unit = Unit()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                unit.imports |= {(a.name, None) for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:  # relative import
                    parts = package.split(".")
                    base = ".".join([*parts[: len(parts) - sub.level + 1], base]).strip(".")
                for alias in sub.names:
                    child = f"{base}.{alias.name}"
                    unit.imports.add((child, None) if is_module(child) else (base, alias.name))
            elif calls_only and isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
                unit.names.add(sub.func.id)
            elif not calls_only and isinstance(sub, ast.Name):
                unit.names.add(sub.id)
    return unit


def parse_module(path: Path, name: str, is_module: Callable[[str], bool]) -> ModuleInfo:
    """The units of the module ``name`` whose source is ``path``; ``is_module`` tells module names from others."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    calls_only = _is_cli(name)
    functions, top = {}, []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # decorators and default values run when the module is imported
            top += [*node.decorator_list, *node.args.defaults, *(d for d in node.args.kw_defaults if d)]
            functions[node.name] = _unit(node.body, package, is_module, calls_only)
        else:
            top.append(node)
    return ModuleInfo(name, path, _unit(top, package, is_module, calls_only), functions)


def module_file(name: str) -> Path | None:
    """The source file of the package module ``name``, or None (not a module of the package)."""
    if name.split(".")[0] != "primkd":
        return None
    if name == "primkd":
        return PACKAGE_DIR / "__init__.py"
    rel = Path(*name.split(".")[1:])
    for candidate in (PACKAGE_DIR / rel.with_suffix(".py"), PACKAGE_DIR / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _parse(name: str) -> ModuleInfo:
    path = module_file(name)
    if path is None:
        raise ValueError(f"{name}: no such module in {PACKAGE_DIR}")
    return parse_module(path, name, lambda m: module_file(m) is not None)


@functools.cache
def code_closure(entry: str) -> tuple[str, ...]:
    """Source files (repository-relative, sorted) that ``primkd <command>`` may execute for the CLI function
    ``entry`` (``module:function``): see the module docstring for the rules."""
    module, _, function = entry.partition(":")
    if function not in _parse(module).functions:
        raise ValueError(f"{entry}: no such function (a stage's entry)")
    done: set[tuple[str, str | None]] = set()  # (module, function); None: its top-level code
    todo = [tuple(DISPATCH.split(":")), (module, REGISTER), (module, function)]

    def load(mod: str) -> None:
        """Importing ``mod`` runs its top-level code and that of the packages above it."""
        parts = mod.split(".")
        todo.extend((".".join(parts[:i]), None) for i in range(1, len(parts) + 1))

    def reach(mod: str, name: str | None) -> None:
        """``from mod import name`` (``name`` None: ``import mod``, the whole module)."""
        if module_file(mod) is None:  # outside the package
            return
        load(mod)
        functions = _parse(mod).functions
        todo.extend((mod, f) for f in functions if name is None or f == name)

    while todo:
        unit_id = todo.pop()
        if unit_id in done:
            continue
        done.add(unit_id)
        mod, name = unit_id
        info = _parse(mod)
        unit = info.top if name is None else info.functions[name]
        load(mod)
        for other, attr in unit.imports:
            reach(other, attr)
        todo.extend((mod, n) for n in unit.names if n in info.functions)
    return tuple(sorted({str(_parse(m).path.relative_to(REPO_ROOT)) for m, _ in done}))
