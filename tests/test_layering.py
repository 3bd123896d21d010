"""The layers of docs/architecture.md ("The layers, and what may import what"), held by
reading every import in the source.

Imports are read with `ast`, not by importing: every ``import x`` and ``from x import y``
at any depth (inside functions, under ``if TYPE_CHECKING:``), relative ones resolved
against their package. ``from pkg import name`` counts as an import of the module
``pkg.name`` when that is a module of ours, else as taking ``name`` from ``pkg``.

A closure follows imports from module to module through ``actors`` and ``emit``,
counting the ``__init__`` of every package on the way (Python runs it) except ``emit``'s
own: that one is the embedding facade, which loads the whole engine, and it is not what
a module of the domain depends on.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("actors", "emit")

IMPURE = (
    *("trio", "quart", "quart_trio", "hypercorn", "httpx", "werkzeug", "wsproto", "h11"),
    *("sqlite3", "actors"),
    *("emit.store", "emit.space", "emit.runtime", "emit.http", "emit.realtime", "emit.cli"),
)
"""What the pure layer (emit/domain: the rules, the job, its views) never reaches, directly or through
other modules: the event loop, the web stack, the network, SQLite, actors, and the parts
of emit built on them."""
ENGINE = ("actors", "emit.store", "emit.space", "emit.callbacks", "emit.registry")
"""What emit/http and emit/realtime never import: they reach the engine through
emit.runtime (`Runtime`, `SpaceJobs`) and speak in emit.domain types."""
ENGINE_ATTRIBUTES = frozenset({"store", "hub", "spaces", "writer", "system", "callbacks"})
"""The engine parts a `Runtime` holds, which emit/http and emit/realtime never touch."""


@dataclass(frozen=True, slots=True)
class Import:
    module: str
    """The module imported, resolved (``emit.store.records``, ``trio``)."""
    names: tuple[str, ...]
    """The names a ``from`` import takes from it (empty for ``import x``)."""
    line: int


class Source:
    """The modules under ``root`` (one dotted name per file), and their imports."""

    def __init__(self, root: Path, packages: tuple[str, ...] = PACKAGES) -> None:
        self.root = root
        self.files: dict[str, Path] = {}
        for package in packages:
            for path in sorted((root / package).rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                self.files[".".join(parts)] = path
        self._trees: dict[str, ast.Module] = {}

    def tree(self, module: str) -> ast.Module:
        if module not in self._trees:
            path = self.files[module]
            self._trees[module] = ast.parse(path.read_text(), str(path))
        return self._trees[module]

    def modules(self, prefix: str) -> list[str]:
        """``prefix`` and every module under it."""
        return [m for m in self.files if m == prefix or m.startswith(prefix + ".")]

    def imports(self, module: str) -> list[Import]:
        found = []
        is_package = self.files[module].name == "__init__.py"
        for node in ast.walk(self.tree(module)):
            if isinstance(node, ast.Import):
                found += [Import(alias.name, (), node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = module.split(".") if is_package else module.split(".")[:-1]
                    kept = package[: len(package) - (node.level - 1)]
                    base = ".".join([*kept, *([node.module] if node.module else [])])
                names = [alias.name for alias in node.names]
                modules = [name for name in names if f"{base}.{name}" in self.files]
                # `from pkg import mod` imports the module pkg.mod; only other names
                # are taken from pkg itself.
                found += [Import(f"{base}.{name}", (), node.lineno) for name in modules]
                if len(modules) < len(names):
                    taken = tuple(name for name in names if name not in modules)
                    found.append(Import(base, taken, node.lineno))
        return found

    def closure(self, module: str) -> dict[str, tuple[str, ...]]:
        """Every module ``module`` reaches, ours and others', each with the chain that
        reaches it first (``emit.domain.model``, ``emit.clock``, ``trio``)."""
        chains: dict[str, tuple[str, ...]] = {module: (module,)}
        todo = [module]
        while todo:
            current = todo.pop()
            for imported in self.imports(current):
                for reached in self._with_packages(imported.module):
                    if reached in chains:
                        continue
                    chains[reached] = (*chains[current], reached)
                    if reached in self.files:
                        todo.append(reached)
        return chains

    def _with_packages(self, module: str) -> Iterator[str]:
        """The module and the packages Python runs to import it (not ``emit``'s own)."""
        parts = module.split(".")
        for end in range(2 if parts[0] == "emit" else 1, len(parts)):
            yield ".".join(parts[:end])
        yield module


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


SOURCE = Source(ROOT)


def exported(source: Source, package: str) -> set[str]:
    """The names in ``package``'s ``__all__``."""
    for node in source.tree(package).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"{package} has no __all__")


# ----------------------------------------------------------------------- the rules


def actors_importing_emit(source: Source) -> list[str]:
    return sorted(
        f"{module}:{i.line} imports {i.module}"
        for module in source.modules("actors")
        for i in source.imports(module)
        if under(i.module, ("emit",))
    )


def emit_past_actors_api(source: Source) -> list[str]:
    """What emit takes from actors other than the names its __init__ exports, as
    ``from actors import X`` or ``actors.X``."""
    api = exported(source, "actors")
    problems = []
    for module in source.modules("emit"):
        for i in source.imports(module):
            if under(i.module, ("actors",)) and i.module != "actors":
                problems.append(f"{module}:{i.line} imports {i.module}")
            elif i.module == "actors":
                problems += [
                    f"{module}:{i.line} imports actors.{name}"
                    for name in i.names
                    if name not in api
                ]
        for node in ast.walk(source.tree(module)):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "actors"
                and node.attr not in api
            ):
                problems.append(f"{module}:{node.lineno} uses actors.{node.attr}")
    return sorted(set(problems))


def impure(source: Source, prefix: str) -> list[str]:
    """What the modules under ``prefix`` reach, directly or through other modules of
    ours, that is not pure (`IMPURE`): each as the chain that first reaches it."""
    return sorted(
        " → ".join(chain)
        for module in source.modules(prefix)
        for chain in source.closure(module).values()
        if under(chain[-1], IMPURE) and not any(under(m, IMPURE) for m in chain[:-1])
    )


def edge_past_runtime(source: Source, prefix: str) -> list[str]:
    """What the modules under ``prefix`` import of the engine, or touch of the engine
    parts a `Runtime` holds, or of another object's private names."""
    problems = []
    for module in source.modules(prefix):
        problems += [
            f"{module}:{i.line} imports {i.module}"
            for i in source.imports(module)
            if under(i.module, ENGINE)
        ]
        for node in ast.walk(source.tree(module)):
            if not isinstance(node, ast.Attribute):
                continue
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            value = node.value
            mine = (isinstance(value, ast.Name) and value.id in ("self", "cls")) or (
                isinstance(value, ast.Call)  # super()._x: a subclass's own business
                and isinstance(value.func, ast.Name)
                and value.func.id == "super"
            )
            if node.attr in ENGINE_ATTRIBUTES or (private and not mine):
                problems.append(f"{module}:{node.lineno} uses .{node.attr}")
    return sorted(set(problems))


# ----------------------------------------------------------------------- the tests


def test_actors_import_nothing_of_emit() -> None:
    assert actors_importing_emit(SOURCE) == []


def test_emit_uses_only_what_actors_exports() -> None:
    assert emit_past_actors_api(SOURCE) == []


def test_the_domain_is_pure() -> None:
    assert any(name.startswith("emit.domain.") for name in SOURCE.files)
    assert impure(SOURCE, "emit.domain") == []


@pytest.mark.parametrize("edge", ["emit.http", "emit.realtime", "emit.dashboard"])
def test_http_and_realtime_go_through_the_runtime(edge: str) -> None:
    assert edge_past_runtime(SOURCE, edge) == []


# -------------------------------------------------- the walker reads what it must


def test_the_walker_sees_relative_nested_and_indirect_imports(tmp_path: Path) -> None:
    files = {
        "actors/__init__.py": '__all__ = ["Actor"]\nfrom ._actor import Actor\n',
        "actors/_actor.py": "def f():\n    from emit import x\n",
        "emit/__init__.py": "import trio\n",
        "emit/clock.py": "import trio\n",
        "emit/store/__init__.py": "",
        "emit/store/records.py": "",
        "emit/domain/__init__.py": "",
        "emit/domain/model.py": "from .. import clock\n",
        "emit/domain/rules.py": "def f():\n    from ..store import records\n",
        "emit/http/__init__.py": "",
        "emit/http/routes.py": (
            "import actors\nfrom actors import _actor, Actor\nx = actors.Secret\n"
            "def f(runtime):\n    return runtime.store, runtime._space_ref, self._own\n"
        ),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    source = Source(tmp_path)
    assert actors_importing_emit(source) == ["actors._actor:2 imports emit"]
    assert emit_past_actors_api(source) == [
        "emit.http.routes:2 imports actors._actor",
        "emit.http.routes:3 uses actors.Secret",
    ]
    assert impure(source, "emit.domain") == [
        "emit.domain.model → emit.clock → trio",
        "emit.domain.rules → emit.store",
        "emit.domain.rules → emit.store.records",
    ]
    assert edge_past_runtime(source, "emit.http") == [
        "emit.http.routes:1 imports actors",
        "emit.http.routes:2 imports actors",
        "emit.http.routes:2 imports actors._actor",
        "emit.http.routes:5 uses ._space_ref",
        "emit.http.routes:5 uses .store",
    ]
