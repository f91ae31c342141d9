"""dvc.yaml's code deps cover the code each stage runs, so that editing that code reruns the stage.

Why a test: the deps are a hand-kept list in dvc.yaml, and a missing one fails silently -- the
stage is not rerun and a stale output is taken for a fresh one (e.g. `finetune` normalises and
tokenises its task texts, so an edit of twilbert/text/normalize/ must rerun it). The code a
stage runs is found from the import statements of its command module
(:func:`twilbert.utils.source_closure`, lazy imports included). ``pipeline/`` (params loading,
MLflow tracking) is glue that never changes a result and is deliberately left out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from twilbert.utils import source_closure, source_sha256

REPO = Path(__file__).resolve().parents[2]


def _stages() -> dict[str, dict]:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    return {name: stage.get("do", stage) for name, stage in dvc["stages"].items()}


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_deps_cover_the_code_it_imports(name):
    body = _stages()[name]
    command = body["cmd"].split("pipeline.cli ")[1].split()[0]  # python -m pipeline.cli <command> ...
    deps = [d for d in body.get("deps", []) if isinstance(d, str)]
    code = source_closure(f"stages.{command}", packages=("twilbert", "stages"), root=REPO)
    assert Path("stages") / f"{command}.py" in code and len(code) > 3
    missing = [
        str(p)
        for p in code
        if str(p) != "twilbert/__init__.py" and (REPO / p).read_text().strip() and not _covered(str(p), deps)
    ]
    assert not missing, f"dvc.yaml stage {name}: its code imports {missing}, which are not among its deps"


def test_source_closure_follows_lazy_imports_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("def load():\n    from pkg import never  # the top package's lazy shim: not followed\n")
    (pkg / "never.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.b import B\n")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nimport json\nif TYPE_CHECKING:\n    from pkg import typing_only\n"
        "def f():\n    from .sub import c\n    return c\n"
    )
    (pkg / "typing_only.py").write_text("")
    (pkg / "sub" / "b.py").write_text("B = 1\n")
    (pkg / "sub" / "c.py").write_text("from ..sub.b import B\n")
    found = {str(p) for p in source_closure("pkg.a", packages=("pkg",), root=tmp_path)}
    assert found == {"pkg/__init__.py", "pkg/a.py", "pkg/sub/__init__.py", "pkg/sub/b.py", "pkg/sub/c.py"}
    before = source_sha256("pkg.a", root=tmp_path, packages=("pkg",))
    (pkg / "sub" / "c.py").write_text("from ..sub.b import B  # edited\n")
    edited = source_sha256("pkg.a", root=tmp_path, packages=("pkg",))
    assert edited != before
    (pkg / "never.py").write_text("x = 1\n")  # not in the closure: no effect
    assert source_sha256("pkg.a", root=tmp_path, packages=("pkg",)) == edited
    with pytest.raises(ValueError, match="pkg.missing"):
        source_closure("pkg.missing", packages=("pkg",), root=tmp_path)
