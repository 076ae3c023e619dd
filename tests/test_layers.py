"""The layers import one way: connector -> analysis -> storage, dashboard -> storage.

emotivoice.config and emotivoice.logs sit below everything; emotivoice.cli is the composition
root and may import anything.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "connector": {"connector", "analysis", "storage", "emotivoice.config", "emotivoice.logs"},
    "analysis": {"analysis", "storage", "emotivoice.config", "emotivoice.logs"},
    "storage": {"storage", "emotivoice.config", "emotivoice.logs"},
    "dashboard": {"dashboard", "storage", "emotivoice.config", "emotivoice.logs"},
}
PROJECT = {"connector", "analysis", "storage", "dashboard", "emotivoice"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in PROJECT}


def test_imports_point_one_way():
    violations = []
    for layer, allowed in ALLOWED.items():
        for path in (ROOT / layer).rglob("*.py"):
            for name in imported_modules(path):
                if not any(name == a or name.startswith(a + ".") for a in allowed):
                    violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not violations, "\n".join(violations)


def test_config_imports_nothing_from_the_project():
    for module in ("config.py", "logs.py"):
        assert imported_modules(ROOT / "emotivoice" / module) == set()
