"""Where a run writes, so that a run that fails never damages what its output folder held.

* ``out`` is missing or empty: the run writes in place. When it stops after a checkpoint
  (Ctrl-C, a diverged loss) the checkpoints stay for ``--resume``; when it fails before
  its first checkpoint, what it wrote is removed and ``out`` is as it was.
* ``out`` holds something and ``overwrite`` is given: the run writes in a sibling folder
  ``.<name>.tmp-XXXX`` (same file system) and only a complete run is swapped in: the old
  folder renamed aside, the new one renamed in, the old one deleted. Any failure deletes
  the sibling, so ``out`` stays byte for byte what it was. A sibling left by a killed run
  (SIGKILL, power loss: no handler ran) is named for its host and process, and the next
  staged run into ``out`` deletes it once that process is gone.
* ``resume``: in place, from ``out``'s newest checkpoint.

Everything here is decided and checked before any model is built or any file written.

Example::

    folder = plan_run_folder("runs/llama", resume=False, overwrite=True)
    with writing(folder) as work:
        train_into(work)           # raises: runs/llama untouched
    # here runs/llama is the new run
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pe_core.errors import ArgumentTypeError, ConfigError, PathError

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class RunFolder:
    """``out``: where the finished run lives; ``staged``: it replaces what ``out`` holds,
    so the run writes beside it; ``writes``: this process writes (rank 0 under torchrun)."""

    out: Path
    staged: bool = False
    writes: bool = True


def check_out(out: Any) -> Path:
    """``out`` as a path a run folder can be at: a string or path, not a file, no file
    among its parents, its nearest existing parent writable. Creates nothing."""
    if isinstance(out, str) and not out.strip():
        raise ArgumentTypeError("out is an empty path: pass the folder the run is written to")
    if not isinstance(out, str | os.PathLike) or str(out) == "":
        raise ArgumentTypeError(
            f"out must be a folder path (str or pathlib.Path), got {type(out).__name__} "
            f"{out!r:.60}"
        )
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise PathError(f"out {out} is a symbolic link to nothing (a missing target or a "
                        "loop of links): remove the link or choose another path")
    if out.exists() and not out.is_dir():
        raise PathError(f"out {out} is a file, not a folder: choose another path")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise PathError(f"out {out} cannot be created: {parent} is a file, not a folder; "
                        "choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PathError(f"out {out} is not writable here ({parent}): choose another path")
    return out


def _killed_early(out: Path) -> bool:
    """``out`` holds only what a run writes before its first checkpoint (its settings and
    log): a run killed then (SIGKILL, power loss), with nothing to keep or resume. The
    caller holds ``out``'s lock, so that run is not alive."""
    from pe_core.training.metrics_log import LOG_NAME
    from pe_core.training.settings import SETTINGS_NAME

    early = {SETTINGS_NAME, LOG_NAME, CHECKPOINTS}
    return (not has_checkpoint(out) and (out / SETTINGS_NAME).is_file()
            and {p.name for p in out.iterdir()} <= early)


def has_checkpoint(folder: Path) -> bool:
    from pe_core.training.checkpoint import latest_checkpoint

    return latest_checkpoint(folder / CHECKPOINTS) is not None


def plan_run_folder(out: Any, resume: bool, overwrite: bool, writes: bool = True) -> RunFolder:
    """Where a run into ``out`` writes (see the module docstring); a :class:`ConfigError`
    when ``out`` holds something and neither ``resume`` nor ``overwrite`` says what to do
    with it, or ``resume`` finds no checkpoint."""
    out = check_out(out)
    aside = sorted(out.parent.glob(f".{out.name}.old-*/{out.name}"))
    if aside and not out.exists():
        raise ConfigError(
            f"{out} is missing and {aside[0]} holds the run an --overwrite set aside when it "
            f"was killed: move it back (mv {aside[0]} {out}) or delete it, then run again"
        )
    if resume:
        if not has_checkpoint(out):
            raise ConfigError(f"--resume: no checkpoint under {out / CHECKPOINTS}; start the "
                              "run without resume=True (--resume)")
        return RunFolder(out, writes=writes)
    if not out.is_dir() or not any(out.iterdir()) or _killed_early(out):
        return RunFolder(out, writes=writes)
    if overwrite:
        return RunFolder(out, staged=True, writes=writes)
    if has_checkpoint(out):
        raise ConfigError(
            f"{out} already holds a training run: continue it with resume=True "
            "(--resume), or pass overwrite=True (--overwrite) to start again"
        )
    raise ConfigError(
        f"{out} is not empty: pass overwrite=True (--overwrite) to replace what it holds "
        "once the new run is complete, or choose another folder"
    )


@contextmanager
def run_lock(out: Any, writes: bool = True) -> Iterator[None]:
    """Hold ``out``'s lock for the length of a run: a second run into the same folder
    (``--overwrite`` twice at once, a ``--resume`` beside a live run) fails at once with a
    :class:`PathError` instead of racing the first for the folder. The lock is an
    ``flock`` on ``.<name>.lock`` beside ``out`` (a staged run renames ``out`` itself);
    the operating system drops it when the process dies, so a killed run blocks no one,
    and the file is removed when the run ends. ``writes=False`` (ranks other than 0)
    takes none."""
    out = check_out(out)
    if not writes:
        yield
        return
    path = out.parent / f".{out.name}.lock"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = _lock(path)
    except OSError as exc:
        raise PathError(f"cannot lock {out} ({path}: {exc.strerror or exc}); choose "
                        "another out folder") from None
    if fd is None:
        raise PathError(f"{out} is being written by another run (it holds {path}): wait "
                        "for that run to end, or choose another out folder")
    try:
        yield
    finally:
        # removed while still held: a process that opened the old file before this
        # unlink finds, once it gets the lock, that the path names another file or none,
        # and tries again (see _lock)
        path.unlink(missing_ok=True)
        os.close(fd)


def _lock(path: Path) -> int | None:
    """An open, exclusively locked descriptor of ``path``; None when another holds it."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        held = os.fstat(fd)
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev):
            return fd
        os.close(fd)  # the file was removed by the run before us: lock the new one


@contextmanager
def writing(folder: RunFolder) -> Iterator[Path]:
    """The folder this run writes in, for the length of the run; on leaving, the run is
    swapped in (staged) or, after a failure, ``out`` is put back as it was unless
    checkpoints stay there for ``--resume``."""
    out = folder.out
    if not folder.writes:
        yield out
        return
    existed = out.is_dir()
    work = out
    if folder.staged:
        _remove_orphans(out)
        work = _new_sibling(out)
    try:
        yield work
    except BaseException:
        if folder.staged:
            shutil.rmtree(work, ignore_errors=True)
        elif not has_checkpoint(out):
            _empty(out, keep=existed)
        raise
    if folder.staged:
        _swap_in(work, out)


def _host() -> str:
    """This host as a sibling's name records it (no ``-``: that separates the fields)."""
    return socket.gethostname().replace("-", "_")


def _owner() -> str:
    """This process as a sibling's name records it: host and pid."""
    return f"{_host()}-{os.getpid()}"


def _new_sibling(out: Path) -> Path:
    # mkdir, not mkdtemp: the run becomes `out`, so it gets the mode any new folder gets
    # (mkdtemp's is 0o700)
    while True:
        work = out.parent / f".{out.name}.tmp-{_owner()}-{secrets.token_hex(4)}"
        try:
            work.mkdir()
            return work
        except FileExistsError:
            continue


def _remove_orphans(out: Path) -> None:
    """Delete the siblings of ``out`` whose run was killed: made on this host by a
    process that no longer exists. Another host's, or a live process's, stay."""
    host = _host()
    for sibling in out.parent.glob(f".{out.name}.tmp-*"):
        owner_host, _, rest = sibling.name.rsplit(".tmp-", 1)[1].partition("-")
        pid = rest.partition("-")[0]
        if owner_host == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _empty(folder: Path, keep: bool) -> None:
    """Remove what a failed run wrote into a folder that was empty (``keep``) or absent."""
    if not folder.exists():
        return
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _swap_in(new: Path, out: Path) -> None:
    """Replace ``out`` by ``new`` with two renames (each atomic on one file system), then
    delete the old run."""
    aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rename(out, aside / out.name)
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(aside / out.name, out)
        shutil.rmtree(new, ignore_errors=True)
        raise
    finally:
        if out.exists():
            shutil.rmtree(aside, ignore_errors=True)
