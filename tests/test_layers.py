"""The layers import one way, and everything lives under one namespace, emotivoice.*.

    emotivoice.app         the CLI and `serve`: the composition root, may import anything
    emotivoice.connector   -> analysis, storage
    emotivoice.analysis    -> storage
    emotivoice.dashboard   -> storage
    emotivoice.storage
    emotivoice.config, emotivoice.logs: import nothing of the project

The folders stay at the top of the repository (the design card); pyproject maps them to
emotivoice.* names, so a bare `import analysis` would be a second copy of the same module.
"""

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = {"emotivoice.config", "emotivoice.logs"}
ALLOWED = {
    "connector": {"emotivoice.connector", "emotivoice.analysis", "emotivoice.storage", *BASE},
    "analysis": {"emotivoice.analysis", "emotivoice.storage", *BASE},
    "storage": {"emotivoice.storage", *BASE},
    "dashboard": {"emotivoice.dashboard", "emotivoice.storage", *BASE},
}
FOLDERS = {"connector", "analysis", "storage", "dashboard"}
PROJECT = FOLDERS | {"emotivoice"}


@functools.lru_cache(maxsize=None)  # several tests read the same files: parse each once (fast tier)
def imports_of(path: Path) -> frozenset[str]:
    """Every absolute module name the file imports, at top level or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "emotivoice":  # `from emotivoice import app` imports emotivoice.app
                names |= {f"emotivoice.{a.name}" for a in node.names}
    return frozenset(names)


def project_imports(path: Path) -> set[str]:
    return {n for n in imports_of(path) if n.split(".")[0] in PROJECT}


def _within(name: str, allowed: set[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


def python_files() -> list[Path]:
    skip = {".venv", "node_modules", ".git"}
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]


def test_imports_point_one_way():
    violations = []
    for layer, allowed in ALLOWED.items():
        for path in (ROOT / layer).rglob("*.py"):
            for name in project_imports(path):
                if name != "emotivoice" and not _within(name, allowed):
                    violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not violations, "\n".join(violations)


def test_config_and_logs_import_nothing_of_the_project():
    """The settings package (emotivoice/config/) may import its own modules, and nothing else of ours."""
    for path in sorted((ROOT / "emotivoice" / "config").rglob("*.py")):
        outside = {n for n in project_imports(path) if not _within(n, {"emotivoice.config"})}
        assert outside == set(), f"{path.relative_to(ROOT)} imports {outside}"
    for module in ("logs.py", "__init__.py"):
        assert project_imports(ROOT / "emotivoice" / module) == set(), module


def test_nothing_imports_the_app_layer_from_below():
    for path in python_files():
        rel = path.relative_to(ROOT)
        if rel.parts[0] in FOLDERS or rel.parts[:2] in {("emotivoice", "config"), ("emotivoice", "logs.py")}:
            assert not any(_within(n, {"emotivoice.app"}) for n in imports_of(path)), f"{rel} imports emotivoice.app"


def test_no_bare_top_level_names():
    """`import analysis` would load the same files a second time as another module (two of every
    class, two sets of module state): every import, in tests and benchmarks too, goes through
    emotivoice.*."""
    bare = [f"{p.relative_to(ROOT)} imports {n}" for p in python_files()
            for n in imports_of(p) if n.split(".")[0] in FOLDERS]
    assert not bare, "\n".join(bare)


def test_modules_are_imported_statically():
    """A listener or stage named in a string is invisible to this test and to a reader: the layers
    import modules by name, never through importlib."""
    dynamic = [str(p.relative_to(ROOT)) for layer in (*FOLDERS, "emotivoice") for p in (ROOT / layer).rglob("*.py")
               if "import_module" in p.read_text()]
    assert not dynamic, dynamic


def test_every_package_is_in_the_wheel():
    """pyproject lists the packages by name (package-dir maps the top folders): a new package
    left out would work from the checkout and be missing from an installed wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for layer in (*FOLDERS, "emotivoice"):
        for init in (ROOT / layer).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            found.add(".".join(parts if layer == "emotivoice" else ("emotivoice", *parts)))
    assert found - listed == set(), f"not in pyproject's packages: {sorted(found - listed)}"
