"""dvc.yaml declares what each stage really reads.

For every stage, the `maskreid` modules its script can load (its imports, followed transitively
through the library, function-local imports included: a static reading, so a lazily imported module
counts too) must lie under one of the stage's declared deps; and every params key its pipeline
function reads with a literal `get(params, "a.b")` must be covered by a declared param. A module
edit then re-runs exactly the stages that load it, and `-S key=value` re-runs the stages that read it.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.exists():
            return p
    return None


def _imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    pkg = path.relative_to(SRC).with_suffix("").parts
    pkg = pkg[:-1] if pkg[-1] != "__init__" else pkg[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = list(pkg[: len(pkg) - node.level + 1])
                mod = ".".join(base + ([mod] if mod else []))
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in out if m.split(".")[0] == "maskreid"}


@lru_cache(maxsize=None)
def _closure(script: str) -> frozenset[Path]:
    seen: set[Path] = set()
    todo = [m for m in _imports_of_script(REPO / script)]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            f = _module_file(".".join(parts[:i]))
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(_imports_of(f))
    return frozenset(seen)


def _imports_of_script(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("maskreid"):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _stages() -> list[tuple[str, dict]]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return [(name, st.get("do", st)) for name, st in spec.items()]


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name,stage", _stages(), ids=[n for n, _ in _stages()])
def test_every_loaded_module_is_a_declared_dep(name, stage):
    script = stage["cmd"].split()[1]
    deps = [d for d in stage.get("deps", []) if isinstance(d, str)]
    assert script in deps, f"{name}: its own script {script} is not a dep"
    missing = sorted(p.relative_to(REPO).as_posix() for p in _closure(script) if not _covered(p, deps))
    assert not missing, f"stage {name} loads modules its deps do not cover: {missing}"


_RUN = re.compile(r"stage_main\((\w+)\)")


def _literal_params(script: str) -> set[str]:
    """`get(params, "<literal>")` keys read by the stage's run function and the module-local
    functions it calls (f-strings are keyed per item and declared as such; not checked here)."""
    fn_name = _RUN.search((REPO / script).read_text()).group(1)
    module = next(m for m in _imports_of_script(REPO / script) if m.endswith(fn_name)).rsplit(".", 1)[0]
    tree = ast.parse(_module_file(module).read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    keys, todo, seen = set(), [fn_name], set()
    while todo:
        f = todo.pop()
        if f in seen or f not in funcs:
            continue
        seen.add(f)
        for node in ast.walk(funcs[f]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                todo.append(node.func.id)
                if (node.func.id == "get" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                        and isinstance(node.args[1].value, str)):
                    keys.add(node.args[1].value)
    return keys


@pytest.mark.parametrize("name,stage", _stages(), ids=[n for n, _ in _stages()])
def test_every_literal_param_read_is_declared(name, stage):
    declared = [p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])]
    declared = [re.sub(r"\$\{[^}]+\}", "*", d) for d in declared]

    def covered(key: str) -> bool:
        return any(re.fullmatch(re.escape(d).replace(r"\*", "[^.]+") + r"(\..*)?", key) for d in declared)

    missing = sorted(k for k in _literal_params(stage["cmd"].split()[1]) if not covered(k))
    assert not missing, f"stage {name} reads params it does not declare: {missing}"


def test_the_check_catches_an_undeclared_module():
    """The coverage rule itself: the evaluate stage loads the report package (rank lists)."""
    evaluate = dict(_stages())["evaluate"]
    deps = [d for d in evaluate["deps"] if d != "src/maskreid/report"]
    assert any(not _covered(p, deps) for p in _closure("stages/evaluate.py"))
