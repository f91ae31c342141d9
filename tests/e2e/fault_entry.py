"""Test-only entry point: the ``pipeline.cli`` command line, with a fault from ``TWILBERT_FAULT`` injected
into pre-training through :class:`twilbert.train.pretrain.TrainerHooks`.

``python -m tests.e2e.fault_entry pretrain ...`` takes the same arguments as ``python -m pipeline.cli``.
``TWILBERT_FAULT`` makes the process SIGKILL itself at a chosen point, to test crash safety:
``kill_after_step:<n>`` right after optimizer step ``n``; ``kill_during_save:<n>[:<file>]`` during this
process's ``n``-th checkpoint save (step checkpoints and ``final/`` count), while ``<file>`` (default
``model.safetensors``) is being written: its temp file is complete but not renamed, the files before it
are written, the rest and ``checksums.json`` are not. The hooks are bound to the ``pretrain`` entry
point before the CLI runs (the stage imports it when called).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from twilbert.train.checkpoint import CHECKSUMS_FILE, CONFIG_FILE, MODEL_FILE, TRAINER_FILE

FAULT_ENV = "TWILBERT_FAULT"


@dataclass(frozen=True)
class Fault:
    kind: str  # kill_after_step | kill_during_save
    n: int
    file: str = MODEL_FILE

    @classmethod
    def from_env(cls) -> Fault | None:
        spec = os.environ.get(FAULT_ENV, "").strip()
        if not spec:
            return None
        kind, _, rest = spec.partition(":")
        parts = rest.split(":")
        files = (MODEL_FILE, CONFIG_FILE, TRAINER_FILE, CHECKSUMS_FILE)
        ok = kind in ("kill_after_step", "kill_during_save") and parts[0].isdigit() and int(parts[0]) >= 1 and len(parts) <= 2
        ok = ok and (len(parts) == 1 or (kind == "kill_during_save" and parts[1] in files))
        if not ok:
            raise ValueError(f"{FAULT_ENV}={spec!r}: expected kill_after_step:<n> or kill_during_save:<n>[:<one of {', '.join(files)}>]")
        return cls(kind, int(parts[0]), parts[1] if len(parts) == 2 else MODEL_FILE)

    def hooks(self):
        from twilbert.train.pretrain import TrainerHooks

        if self.kind == "kill_after_step":
            return TrainerHooks(after_step=lambda step: step == self.n and die(f"after step {step}"))
        saves = [0]  # every save writes model.safetensors first: its writes count the saves

        def on_write(path: Path) -> None:
            saves[0] += path.name == MODEL_FILE
            if saves[0] == self.n and path.name == self.file:
                die(f"while writing {path}")

        return TrainerHooks(on_checkpoint_write=on_write)


def die(why: str) -> None:
    print(f"pretrain: {FAULT_ENV}: SIGKILL {why}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    fault = Fault.from_env()
    if fault is not None:
        import twilbert.train.pretrain as pretrain_module

        pretrain_module.pretrain = functools.partial(pretrain_module.pretrain, hooks=fault.hooks())
    from pipeline.cli import app

    app()


if __name__ == "__main__":
    main()
