"""The pack's safetensors files: reading a checked header, and writing without overwriting, atomically.

Every file the pack writes (LinearAG coefficients, scheduler networks, training checkpoints) is safetensors
with a `format` (and `format_version`) in its metadata. `checked_file` opens one and refuses, naming the
file, what is unreadable or of another format; `write_new` writes a file that must not exist yet and
`write_replacing` one that may (a checkpoint): both write into a temporary file in the same folder first and
flush it to the disk before it gets its name (then the folder), so a crash, a power loss or a full disk never
leaves a half-written or empty file under the final name, whatever the safetensors version (0.4.5 writes in
place).
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file


class FileRefused(ValueError):
    """A file of the pack that cannot be used here: unreadable, of another format, or made for another setup.
    The message names the file and says what to do."""


def shown(value, limit: int = 60) -> str:
    """A value for an error message, never long (a message ends up in the UI and the history)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


@contextlib.contextmanager
def checked_file(path: str, fmt: str, version: str | None, not_this_format: str):
    """Open the safetensors file at `path`: yields (metadata, handle). Refuses with FileRefused an unreadable
    file, one whose metadata `format` is not `fmt` (the message: NAME + `not_this_format`, which says what
    the file should be and how to make one), and one of another `format_version` (when `version` is given;
    files without one are taken as `version`)."""
    name = os.path.basename(path)
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != fmt:
                raise FileRefused(f"{name} {not_this_format}")
            if version is not None and meta.get("format_version", version) != version:
                raise FileRefused(f"{name} has format_version {shown(meta.get('format_version'))}; this version "
                                  f"of the pack reads {version}. Update the pack.")
            yield meta, f
    except FileRefused:
        raise
    except (SafetensorError, OSError, ValueError) as e:
        raise FileRefused(f"{name} is not a readable safetensors file (truncated or corrupt?): "
                          f"{shown(str(e), 200)}") from None


def _written_beside(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """The file, written completely into a temporary file in `path`'s folder (created if needed): its path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=".gs-", suffix=".partial", dir=folder)
    os.close(handle)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, partial, metadata=metadata)
        _to_disk(partial)  # on the disk before it gets its name: after a power loss the name never holds a hole
    except BaseException:
        os.remove(partial)
        raise
    return partial


def _to_disk(path: str) -> None:
    """fsync a file (its data and size are on the disk when this returns)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _folder_to_disk(path: str) -> None:
    """fsync the folder of `path`, so that a new name in it survives a power loss; nothing where the system cannot
    open a folder (Windows)."""
    try:
        descriptor = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(descriptor)


def write_new(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a file that does not exist yet. Raises FileExistsError, and writes nothing, where a file already
    has the name, also one that appeared while this one was being written: the finished file is linked under
    its name, which fails if the name is taken (where the file system has no hard links, a check just before
    the rename)."""
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; files are never overwritten")
    partial = _written_beside(path, tensors, metadata)
    try:
        try:
            os.link(partial, path)
        except FileExistsError:
            raise FileExistsError(f"{path} appeared while it was being written; it is left as it is") from None
        except OSError:  # no hard links on this file system (FAT, some network shares)
            if os.path.exists(path):
                raise FileExistsError(f"{path} appeared while it was being written; it is left as it is") from None
            os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    _folder_to_disk(path)


@contextlib.contextmanager
def claimed(path: str):
    """An exclusive claim on `path` for the time of a with-block, across processes (two ComfyUI servers sharing a
    models folder): a lock file beside it, PATH.lock, made only where none exists and holding this process's host
    and pid, removed on leaving. One left by a process of this host that is gone is taken over; FileRefused naming
    the holder where another process holds it."""
    lock = path + ".lock"
    me = f"{socket.gethostname()} {os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(lock)), exist_ok=True)  # a fresh ComfyUI has no such folder yet
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder_of(lock)
            if holder is not None and not _gone(holder):
                host, pid = holder
                raise FileRefused(
                    f"{os.path.basename(path)} is being written by another process ({host}, pid {pid}: another "
                    f"ComfyUI sharing this folder?); its work is never taken over while it runs. Queue this under "
                    f"another name, or once it is done; if no such process runs, remove {os.path.basename(lock)}"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)  # left by a process that is gone
            continue
        with os.fdopen(descriptor, "w") as f:
            f.write(me)
        break
    else:
        raise FileRefused(f"{os.path.basename(lock)} could not be made; remove it if no training runs")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if _holder_of(lock) == (socket.gethostname(), os.getpid()):
                os.remove(lock)


def _holder_of(lock: str) -> tuple[str, int] | None:
    """(host, pid) written in a lock file; None where it cannot be read (being written, or not one of ours)."""
    try:
        host, pid = open(lock).read().rsplit(" ", 1)
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _gone(holder: tuple[str, int]) -> bool:
    """Is the process that wrote a lock gone? Only a process of this host can be looked at; another host's is
    taken as running."""
    host, pid = holder
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it runs, as another user
        return False
    return False


def write_replacing(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a file that replaces the one under its name (a training checkpoint), atomically."""
    os.replace(_written_beside(path, tensors, metadata), path)
    _folder_to_disk(path)
