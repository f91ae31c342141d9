"""Small helpers shared across the core (kept here so they exist once)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints and shards can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable (not every filesystem lets a directory be fsynced)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide, so racy with threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_beside(path: Path) -> Path:
    # a unique name rather than tempfile.mkstemp, whose 0600 mode would survive the rename
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"


def _publish(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the usual mode, fsync it and rename it over ``path``."""
    os.chmod(tmp, 0o666 & ~_umask())  # safetensors writes 0600 files; use the usual mode
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a temp file next to ``path``, fsync it, then rename it over ``path``.

    Readers never see half a file, and on any failure the temp file is removed.
    """
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        with disk_full_as_oserror(path, tmp):
            write(tmp)
        _publish(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        name_path(exc, path, tmp)
        raise
    fsync_dir(path.parent)


# Where libraries hide an errno in their message: pyarrow "[errno 28] ...", Rust (safetensors,
# tokenizers) "Os { code: 28, ...", "os error 28".
ERRNO_IN_TEXT = re.compile(r"\[errno (\d+)\]|Os \{ code: (\d+)|os error (\d+)", re.IGNORECASE)
_LOW_FREE_BYTES = 1 << 20  # below this, a failed write on that filesystem is taken as a full disk


@contextlib.contextmanager
def disk_full_as_oserror(path: str | Path, tmp: str | Path | None = None) -> Iterator[None]:
    """A writer's non-``OSError`` failure on a full disk becomes ``OSError(ENOSPC, ..., path)``.

    Why: ``torch.save`` reports a full disk as ``RuntimeError ... unexpected pos`` and safetensors as
    its own error with ``os error 28`` inside; neither says "no space left on device" nor names the
    file. An errno in the message is used as given; otherwise the failure counts as a full disk when
    the filesystem holding ``tmp`` (still there, so its bytes still count) has under 1 MiB free."""
    try:
        yield
    except OSError:
        raise
    except Exception as exc:
        found = ERRNO_IN_TEXT.search(str(exc))
        code = int(next(g for g in found.groups() if g)) if found else None
        if code is None:
            with contextlib.suppress(OSError):
                if shutil.disk_usage(Path(tmp or path).parent).free < _LOW_FREE_BYTES:
                    code = errno.ENOSPC
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from exc


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def name_path(exc: BaseException, path: str | Path, *aliases: str | Path) -> None:
    """Make an ``OSError`` raised while writing ``path`` name it: pyarrow's, ``file.write``'s and a
    full disk's carry no file name, and a temp file's name (``aliases``) is not the one users know.
    Other exceptions (torch's ``unexpected pos``, safetensors' ``IoError``) get ``path`` as
    ``exc.twilbert_path`` for :func:`pipeline.common.io_error_line`."""
    if isinstance(exc, OSError):
        if exc.filename is None or str(exc.filename) in {str(a) for a in aliases}:
            exc.filename = str(path)
    elif isinstance(exc, Exception) and getattr(exc, "twilbert_path", None) is None:
        with contextlib.suppress(AttributeError, TypeError):
            exc.twilbert_path = str(path)


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Errors raised inside the block are about writing ``path`` (see :func:`name_path`)."""
    try:
        yield
    except Exception as exc:
        name_path(exc, path)
        raise


@contextlib.contextmanager
def atomic_outputs(*paths: str | Path) -> Iterator[list[Path]]:
    """Temp files beside each of ``paths`` for a writer that streams (Parquet, Arrow, appended TSV):
    when the block succeeds each is fsynced and renamed over its final name, in order; when it fails
    every temp is removed. So a final name only ever holds a complete file."""
    finals = [Path(p) for p in paths]
    tmps = [_temp_beside(p) for p in finals]
    try:
        yield tmps
        for tmp, final in zip(tmps, finals):
            with writing(final):
                _publish(tmp, final)
    except BaseException as exc:
        for tmp, final in zip(tmps, finals):
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.filename == str(tmp):
                exc.filename = str(final)
        raise
    for d in {f.parent for f in finals}:
        fsync_dir(d)


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
    and ``from a import Name`` of a package with a PEP 562 ``__getattr__`` counts all of ``a``; except
    the top package's own ``__init__`` (``twilbert/__init__.py`` is only ``twilbert.load``'s
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
                if found is None:  # a name, not a module: a lazy package may load any of its modules
                    package = root.joinpath(*parts[: i - 1])
                    if i > 1 and package / "__init__.py" not in tops and _is_lazy_package(package):
                        todo.extend(package.rglob("*.py"))
                    break
                if found not in seen:
                    todo.append(found)
    return sorted(p.relative_to(root) for p in seen)


def _is_lazy_package(package: Path) -> bool:
    """Whether the package directory ``package`` defines a module-level ``__getattr__`` (PEP 562), which loads
    submodules on attribute access where the import statements cannot show which."""
    import ast

    init = package / "__init__.py"
    if not init.is_file():
        return False
    tree = ast.parse(init.read_text(encoding="utf-8"), filename=str(init))
    return any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body)


def source_sha256(*modules: str, packages: tuple[str, ...] = ("twilbert",), root: str | Path | None = None) -> str:
    """One sha256 over the paths and contents of :func:`source_closure` of ``modules``."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for rel in source_closure(*modules, packages=packages, root=root):
        digest.update(f"{rel.as_posix()}\0".encode())
        digest.update((root / rel).read_bytes())
    return digest.hexdigest()
