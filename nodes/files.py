"""The pack's files in ComfyUI's model folders: where a node writes the file a user named, and what the
cache key of a node that reads or writes a file follows.

ComfyUI re-runs a node only when its inputs or its IS_CHANGED value changed, under every cache policy
of every host (classic, LRU, RAM pressure: the last two remember results of older prompts too). A
node whose inputs name a file therefore returns the file's state from IS_CHANGED (`file_state`), and a
node whose result is a file returns `written_file_key`: its cached result stands while the file it
wrote is there unchanged, and a file removed or replaced since makes the same prompt run again.
"""
from __future__ import annotations

import logging
import os

import folder_paths

log = logging.getLogger("guidance_schedules")


def register_model_folder(name: str, extensions: set[str], *extra_paths: str) -> None:
    """models/NAME (and extra_paths after it) as a ComfyUI model folder: listed in combos, found by
    get_full_path, refreshed without a restart. Paths a user's extra_model_paths.yaml gave are kept."""
    if name not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[name] = ([], set(extensions))
    paths, known = folder_paths.folder_names_and_paths[name]
    if not known:
        folder_paths.folder_names_and_paths[name] = (paths, set(extensions))
    for path in (os.path.join(folder_paths.models_dir, name), *extra_paths):
        if path not in paths:
            paths.append(path)


MAX_NAME = 120  # characters of a name: more is a sentence, not a file name
LONGEST_SUFFIX = ".safetensors"  # the longest ending the pack adds to a name (NAME.safetensors, NAME.resume)


def _name_max(folder: str) -> int:
    """The longest file name, in bytes, the file system under `folder` (or its nearest existing parent) takes."""
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        return int(os.pathconf(folder or ".", "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows): NTFS and FAT32 take 255
        return 255


def output_path(folder: str, name, extension: str = ".safetensors") -> str:
    """Where a node writes the file a user named: the first folder ComfyUI lists for `folder` (models/FOLDER
    unless extra_model_paths.yaml says otherwise). A name no file system takes, or that would make a hidden
    file, is refused by name before any work: at most MAX_NAME characters, each part (subfolders with /) within
    the file system's limit in bytes, not starting with a dot."""
    stem = name.strip().removesuffix(extension) if isinstance(name, str) else ""
    shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:60] + "..."
    parts = stem.replace("\\", "/").split("/")
    if not stem or len(stem) > MAX_NAME or any(ord(c) < 32 or c in '<>:"|?*' for c in stem) \
            or os.path.isabs(stem) or any(not part or part.startswith(".") for part in parts):
        raise ValueError(f"name: give a file name for models/{folder} of at most {MAX_NAME} characters, without "
                         f"control characters or any of <>:\"|?*, whose parts (subfolders with /) are not empty "
                         f"and do not start with a dot, got {shown}")
    root = folder_paths.get_folder_paths(folder)[0]
    limit = _name_max(root)
    longest = max(len(part.encode("utf-8")) for part in parts[:-1] + [parts[-1] + LONGEST_SUFFIX])
    if longest > limit:
        raise ValueError(f"name: {shown} is too long for the file system of models/{folder}: a file or folder name "
                         f"there takes {limit} bytes, this one needs {longest} (in UTF-8 a CJK character or an "
                         "emoji takes 3 or 4 bytes); choose a shorter name")
    return os.path.join(root, stem + extension)


def new_output_path(folder: str, name) -> str:
    """output_path, refused by name where a file is there already: files are never overwritten, and a node
    says so before its work, not after."""
    path = output_path(folder, name)
    if os.path.exists(path):
        raise ValueError(f"name: {path} exists; choose another name (files are never overwritten)")
    return path


def write_under_a_free_name(path: str, write) -> str:
    """write(p) for `path`, or, where a file took that name meanwhile (another server sharing the models folder, a
    user's copy), for the first free NAME_2, NAME_3, ...: never overwrites, never loses the work. write(p) must
    raise FileExistsError, writing nothing, where p exists (samplers/files.py's write_new does). The path
    written; a warning (log and toast) where it is not `path`."""
    stem, extension = os.path.splitext(path)
    candidate, number = path, 1
    while True:
        try:
            write(candidate)
        except FileExistsError:
            number += 1
            candidate = f"{stem}_{number}{extension}"
            continue
        if candidate != path:
            log.warning("%s appeared while this node worked (another server sharing the models folder, or a copy); "
                        "it is left as it is, and the result was written as %s", os.path.basename(path),
                        os.path.basename(candidate))
        return candidate


def file_state(path: str | None) -> str:
    """What ComfyUI's cache key of a node that reads a file must follow: a file replaced under the same
    name (another size or modification time) or removed is read again by the next prompt."""
    if path is None:
        return "none"
    try:
        stat = os.stat(path)
    except OSError:
        return "absent"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def input_file_state(folder: str, name) -> str:
    """file_state of the file a node's input names in a model folder ("none" where it names none)."""
    return file_state(folder_paths.get_full_path(folder, name) if isinstance(name, str) else None)


# path -> (the key the run that wrote the file was cached under, the file's state right after writing)
_written: dict[str, tuple[str, str]] = {}
# path -> how many files this process wrote there: a file written, removed and asked for again gets a
# key that no earlier run of the node was cached under
_writes: dict[str, int] = {}


def written_file_key(path: str) -> str:
    """The IS_CHANGED value of a node whose result is the file at `path`.

    While the file this process wrote there is unchanged, the key of the run that wrote it: ComfyUI
    answers the same prompt from its cache (and shows the node's result again). Otherwise the file's
    state, counted with the writes so far, so that a removed file is never mistaken for the absence
    before an earlier write (the RAM-pressure and LRU caches remember that prompt)."""
    state = file_state(path)
    key, written_state = _written.get(path, (None, None))
    if key is not None and state == written_state:
        return key
    return f"{state}#{_writes.get(path, 0)}"


def wrote_file(path: str, key: str) -> None:
    """Record that a run cached under `key` (its written_file_key before it wrote) wrote the file at `path`."""
    _writes[path] = _writes.get(path, 0) + 1
    _written[path] = (key, file_state(path))


def output_file_key(folder: str, name) -> str:
    """written_file_key of the file a node writes under the user's `name` (the IS_CHANGED of such nodes;
    a node taking its inputs as lists gets the name as a one-item list)."""
    try:
        return written_file_key(output_path(folder, name[0] if isinstance(name, list) else name))
    except ValueError:
        return "invalid name"  # the node itself refuses it, with the reason
