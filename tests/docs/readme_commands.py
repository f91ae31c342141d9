"""The shell commands a Markdown file documents: every line of its ```bash / ```sh blocks, and the
``$ ``-prefixed lines of its other blocks, with ``\\`` continuations joined, comments and blank lines
dropped and heredocs kept whole (``cat > f <<'EOF'`` ... ``EOF`` is one command)."""

from __future__ import annotations

import re
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\s*$")


def _strip_comment(line: str) -> str:
    """``cmd  # comment`` -> ``cmd`` (a ``#`` inside quotes or a word stays)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def commands(markdown: str) -> list[str]:
    out: list[str] = []
    lang, block = None, None
    for line in markdown.splitlines():
        m = FENCE.match(line.strip())
        if m and block is None:
            lang, block = m.group(1), []
            continue
        if m and block is not None:
            out.extend(_block_commands(block, shell=lang in ("bash", "sh", "shell", "console")))
            lang, block = None, None
            continue
        if block is not None:
            block.append(line)
    return out


def _block_commands(lines: list[str], shell: bool) -> list[str]:
    if not shell:
        lines = [line.strip()[2:] for line in lines if line.strip().startswith("$ ")]
    cmds: list[str] = []
    pending = ""
    heredoc: str | None = None
    for raw in lines:
        if heredoc is not None:
            pending += "\n" + raw
            if raw.strip() == heredoc:
                cmds.append(pending)
                pending, heredoc = "", None
            continue
        line = _strip_comment(raw)
        if not line.strip():
            continue
        pending = f"{pending} {line.strip()}".strip() if pending else line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        m = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", pending)
        if m:
            heredoc = m.group(1)
            continue
        cmds.append(re.sub(r"\s+", " ", pending))
        pending = ""
    if pending:
        cmds.append(pending)
    return cmds


def readme_commands(path: Path) -> list[str]:
    return commands(path.read_text(encoding="utf-8"))
