"""Security invariants of the code base, checked on the source (issue: reliability, "Security").

* weights load only through safetensors; any other torch state loads with ``weights_only=True``;
* nothing from params (or anywhere) is evaluated as code: no ``eval``/``exec``, YAML only through
  ``safe_load``, no pickle;
* the documented MLflow UI and model server bind 127.0.0.1.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("twilbert", "pipeline", "stages") for p in (REPO / d).rglob("*.py"))


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func: ast.expr) -> str:
    """Dotted name of a call target: torch.load, yaml.load, eval, x.from_pretrained; a chain on a
    call result (``model.to(d).eval()``) starts with ``()``, so a method never reads as a builtin."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    parts.append(func.id if isinstance(func, ast.Name) else "()")
    return ".".join(reversed(parts))


def _imported_modules(path: Path) -> set[str]:
    """Names bound by ``import x`` / ``import x as y`` (module objects, not local variables)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return out


def _kw(call: ast.Call, key: str):
    for k in call.keywords:
        if k.arg == key and isinstance(k.value, ast.Constant):
            return k.value.value
    return None


def test_sources_found():
    assert len(SOURCES) > 40


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_unsafe_loading_or_evaluation(path):
    problems = []
    modules = _imported_modules(path)
    for call in _calls(path):
        name = _name(call.func)
        where = f"{path.relative_to(REPO)}:{call.lineno}"
        if name in ("eval", "exec", "compile", "__import__"):
            problems.append(f"{where}: {name}()")
        if name.endswith("torch.load") and _kw(call, "weights_only") is not True:
            problems.append(f"{where}: torch.load without weights_only=True")
        if name.startswith(("pickle.", "cloudpickle.", "dill.")) and name.split(".")[-1] in ("load", "loads"):
            problems.append(f"{where}: {name}")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load") and "yaml" in modules:  # PyYAML itself
            problems.append(f"{where}: {name} (use yaml.safe_load)")
        if name.endswith("from_pretrained") and "Tokenizer" not in name and "Config" not in name:
            if _kw(call, "use_safetensors") is not True:
                problems.append(f"{where}: {name} without use_safetensors=True")
    assert not problems, problems


def test_documented_servers_bind_localhost():
    docs = (REPO / "README.md").read_text(encoding="utf-8") + (REPO / "Makefile").read_text(encoding="utf-8")
    commands = re.findall(r"mlflow (?:ui|server|models serve)[^\n`]*", docs)
    assert commands, "no MLflow UI/serve command documented"
    for cmd in commands:
        assert "--host 127.0.0.1" in cmd, cmd
