"""Small helpers shared across the core (kept here so they exist once)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints and shards can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def _imported_names(path: Path, root: Path) -> set[str]:
    """Every module name an import statement of ``path`` may load (``from a import b`` gives ``a``
    and ``a.b``), at module level or inside functions; ``if TYPE_CHECKING:`` blocks are skipped."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = path.relative_to(root).with_suffix("").parts[:-1]  # the package this file belongs to
    names: set[str] = set()
    skip = {
        id(n)
        for n in ast.walk(tree)
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
        for n in ast.walk(n)
    }
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = list(package[: len(package) - node.level + 1]) if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def source_closure(*modules: str, packages: tuple[str, ...] = ("twilbert",), root: str | Path | None = None) -> list[Path]:
    """The ``.py`` files of ``modules`` and of every module of ``packages`` they import, directly or
    not, found by reading the import statements (lazy ones inside functions count: they run too).

    Why: what must invalidate a result -- a run's resume fingerprint, a DVC stage's ``deps`` -- is
    the code that computes it, and a list derived from the imports cannot go stale the way a
    hand-kept one does. Importing ``a.b.c`` runs every package ``__init__`` on the way, so those count,
    except the top package's own ``__init__`` (``twilbert/__init__.py`` is only ``twilbert.load``'s
    lazy shim, whose import of the inference code runs when ``load`` is called, not on import).
    ``root`` holds the packages (default: the directory above this package). Sorted, relative to ``root``."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    tops = {root / p / "__init__.py" for p in packages}
    todo = [f for m in modules if (f := _module_file(root, m)) is not None]
    if len(todo) != len(modules):
        raise ValueError(f"not found under {root}: {[m for m in modules if _module_file(root, m) is None]}")
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path in tops:
            continue
        for name in _imported_names(path, root):
            parts = name.split(".")
            if parts[0] not in packages:
                continue
            for i in range(1, len(parts) + 1):  # a.b.c loads a, a.b and a.b.c
                found = _module_file(root, ".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    return sorted(p.relative_to(root) for p in seen)


def source_sha256(*modules: str, packages: tuple[str, ...] = ("twilbert",), root: str | Path | None = None) -> str:
    """One sha256 over the paths and contents of :func:`source_closure` of ``modules``."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for rel in source_closure(*modules, packages=packages, root=root):
        digest.update(f"{rel.as_posix()}\0".encode())
        digest.update((root / rel).read_bytes())
    return digest.hexdigest()
