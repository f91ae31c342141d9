"""dvc.yaml's code deps cover the code each stage runs, so that editing that code reruns the stage.

Why a test: the deps are a hand-kept list in dvc.yaml, and a missing one fails silently -- the
stage is not rerun and a stale output is taken for a fresh one (e.g. `finetune` normalises and
tokenises its task texts, so an edit of twilbert/text/normalize/ must rerun it). The code a
stage runs is found from the import statements of its command module
(:func:`twilbert.utils.source_closure`, lazy imports included). ``pipeline/`` (params loading,
MLflow tracking) is glue that never changes a result and is deliberately left out.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from twilbert.utils import source_closure, source_sha256

REPO = Path(__file__).resolve().parents[2]


def _stages() -> dict[str, dict]:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    return {name: stage.get("do", stage) for name, stage in dvc["stages"].items()}


CODE = ("twilbert/", "stages/")  # deps under these are code; the others are data and models
# Modules a package dep may hold although no stage imports them: the per-row normalisation oracle
# lives in the normalize package beside the polars rules it mirrors (one table entry holds both).
ORACLES = {"twilbert/text/normalize/reference.py"}


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def _stage_code(body: dict) -> set[str]:
    """The non-empty project modules the stage's command imports (``twilbert/__init__.py`` is
    ``twilbert.load``'s lazy shim, run only when ``load`` is called)."""
    command = body["cmd"].split("pipeline.cli ")[1].split()[0]  # python -m pipeline.cli <command> ...
    code = source_closure(f"stages.{command}", packages=("twilbert", "stages"), root=REPO)
    assert Path("stages") / f"{command}.py" in code and len(code) > 3
    return {str(p) for p in code if str(p) != "twilbert/__init__.py" and (REPO / p).read_text().strip()}


def _modules_under(dep: str) -> set[str]:
    """A file dep is itself; a directory dep (a package) stands for every non-empty module in it."""
    path = REPO / dep
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return {str(f.relative_to(REPO)) for f in files if f.is_file() and f.read_text().strip()}


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_deps_cover_the_code_it_imports(name):
    body = _stages()[name]
    deps = [d for d in body.get("deps", []) if isinstance(d, str)]
    code = _stage_code(body)
    missing = sorted(p for p in code if not _covered(p, deps))
    assert not missing, f"dvc.yaml stage {name}: its code imports {missing}, which are not among its deps"


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_code_deps_are_all_imported(name):
    """The other direction: a code dep the stage never imports reruns it for nothing (at 94M pairs an
    edit of the model code rerunning the data stages costs about half an hour). A directory dep is
    spurious unless the stage imports every module in it; list the modules it does import instead."""
    body = _stages()[name]
    code = _stage_code(body)
    deps = [d for d in body.get("deps", []) if isinstance(d, str) and d.startswith(CODE)]
    for dep in deps:
        assert (REPO / dep).exists(), f"dvc.yaml stage {name}: dep {dep} does not exist"
    spurious = {dep: sorted(_modules_under(dep) - code - ORACLES) for dep in deps}
    spurious = {dep: unused for dep, unused in spurious.items() if unused}
    assert not spurious, f"dvc.yaml stage {name}: deps its code never imports (dep: unused modules): {spurious}"


def test_a_package_dep_covers_its_modules():
    """A package directory as a dep (``twilbert/text/normalize``) covers, and is justified by, its modules."""
    assert _covered("twilbert/model/heads.py", ["twilbert/model"])
    assert _covered("twilbert/model/heads.py", ["twilbert/model/"])
    assert not _covered("twilbert/modelling.py", ["twilbert/model"])
    assert "twilbert/model/heads.py" in _modules_under("twilbert/model")
    assert _modules_under("twilbert/tokens.py") == {"twilbert/tokens.py"}


def test_the_data_stages_do_not_import_the_model_or_torch():
    """vocab and pairs read the special ids from twilbert.tokens: an edit of the model code (or a
    machine without torch) leaves them alone."""
    for name in ("vocab", "pairs"):
        code = _stage_code(_stages()[name])
        assert not any(p.startswith("twilbert/model/") for p in code), (name, sorted(code))
    modules = "stages.vocab, stages.pairs, twilbert.text.vocab, twilbert.data.pairs"
    probe = f"import sys, {modules}; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO)


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


def test_source_closure_counts_a_lazy_package_whole(tmp_path):
    """``from pkg.lazy import Name`` of a PEP 562 package may load any of its modules: all count."""
    lazy = tmp_path / "pkg" / "lazy"
    lazy.mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (lazy / "__init__.py").write_text("def __getattr__(name):\n    import importlib\n    return importlib.import_module('pkg.lazy.x')\n")
    (lazy / "x.py").write_text("X = 1\n")
    (lazy / "y.py").write_text("Y = 1\n")
    (tmp_path / "pkg" / "user.py").write_text("from pkg.lazy import X\n")
    (tmp_path / "pkg" / "direct.py").write_text("from pkg.lazy.y import Y\n")
    found = {str(p) for p in source_closure("pkg.user", packages=("pkg",), root=tmp_path)}
    assert found == {"pkg/__init__.py", "pkg/user.py", "pkg/lazy/__init__.py", "pkg/lazy/x.py", "pkg/lazy/y.py"}
    found = {str(p) for p in source_closure("pkg.direct", packages=("pkg",), root=tmp_path)}
    assert found == {"pkg/__init__.py", "pkg/direct.py", "pkg/lazy/__init__.py", "pkg/lazy/y.py"}
