"""Writing a version folder the way a serving repository needs it: staged in a hidden sibling
folder, checked there, then renamed into place, so that a poller never sees half a version and
a failed check leaves nothing behind. Shared by ``export`` (built-in family) and ``build``
(custom graphs); both run in the user's environment, never in the server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .versions import REFERENCE_FILE


def refuse_existing(target: Path, overwrite: bool, how: str) -> None:
    """A version folder that exists may be serving: refuse unless asked to replace it."""
    if target.exists() and not overwrite:
        numbers = [int(p.name) for p in target.parent.iterdir() if p.name.isdigit()]
        hint = f" (e.g. {target.parent / str(max(numbers) + 1)})" if numbers else ""
        raise FileExistsError(f"{target} exists and may be serving; write the new version into a new folder "
                              f"next to it{hint}, or pass {how} to replace it")


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A fresh hidden folder next to ``target``; on a clean exit it replaces ``target`` (files
    made world-readable: servers often run as another user), on an error it is removed."""
    tmp = target.parent / f".{target.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for f in tmp.iterdir():
            f.chmod(0o644)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_reference(folder: Path, reference: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Typical inputs [N,T(,F)] and their lengths [N] for the state projection's fit."""
    if reference is None:
        return
    ref_x, ref_len = reference
    save_file({"inputs": torch.from_numpy(np.ascontiguousarray(ref_x)),
               "lengths": torch.from_numpy(np.ascontiguousarray(ref_len, dtype=np.int64))},
              str(folder / REFERENCE_FILE))
