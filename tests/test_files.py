"""The pack's file helper (samplers/files.py): nothing is overwritten, and no half-written file is ever left
under a final name, whatever happens while writing."""
import errno

import pytest
import torch
from safetensors.torch import load_file, save_file

from guidance_schedules.samplers import files
from guidance_schedules.samplers.files import FileRefused, checked_file, write_new, write_replacing

TENSORS = {"x": torch.arange(6, dtype=torch.float32)}


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def test_a_new_file_is_written_whole_and_never_over_another(tmp_path):
    path = tmp_path / "sub" / "new.safetensors"  # its folder is made
    write_new(str(path), TENSORS, {"format": "test"})
    assert torch.equal(load_file(str(path))["x"], TENSORS["x"])
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_new(str(path), {"x": torch.zeros(2)}, {"format": "test"})
    assert path.read_bytes() == before and not leftovers(path.parent)


def test_a_write_that_fails_leaves_nothing_under_the_name(tmp_path, monkeypatch):
    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:  # part of the file, then the disk is full
            f.write(b"\x00" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files, "save_file", full_disk)
    path = tmp_path / "net.safetensors"
    with pytest.raises(OSError, match="No space left"):
        write_new(str(path), TENSORS, {"format": "test"})
    with pytest.raises(OSError, match="No space left"):
        write_replacing(str(tmp_path / "net.resume"), TENSORS, {"format": "test"})
    assert not path.exists() and not (tmp_path / "net.resume").exists() and not leftovers(tmp_path)


def test_a_file_that_appears_while_writing_is_left_as_it_is(tmp_path, monkeypatch):
    path = tmp_path / "net.safetensors"

    def meanwhile(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        path.write_bytes(b"a user's own file")  # another server sharing the folder, or a copy
    monkeypatch.setattr(files, "save_file", meanwhile)
    with pytest.raises(FileExistsError, match="appeared while it was being written"):
        write_new(str(path), TENSORS, {"format": "test"})
    assert path.read_bytes() == b"a user's own file" and not leftovers(tmp_path)


def test_a_checkpoint_is_replaced_whole(tmp_path):
    path = tmp_path / "net.resume"
    write_replacing(str(path), TENSORS, {"format": "test"})
    write_replacing(str(path), {"x": torch.ones(3)}, {"format": "test"})
    assert torch.equal(load_file(str(path))["x"], torch.ones(3)) and not leftovers(tmp_path)


def test_a_checked_header_refuses_another_format_version_or_a_broken_file(tmp_path):
    path = tmp_path / "f.safetensors"
    save_file(TENSORS, str(path), metadata={"format": "mine", "format_version": "2"})
    with checked_file(str(path), "mine", None, "is not mine") as (meta, f):
        assert meta["format_version"] == "2" and torch.equal(f.get_tensor("x"), TENSORS["x"])
    with pytest.raises(FileRefused, match="f.safetensors is not mine"):
        with checked_file(str(path), "yours", None, "is not mine"):
            pass
    with pytest.raises(FileRefused, match="format_version '2'; this version of the pack reads 1. Update the pack."):
        with checked_file(str(path), "mine", "1", "is not mine"):
            pass
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(FileRefused, match="not a readable safetensors file"):
        with checked_file(str(path), "mine", None, "is not mine"):
            pass


@pytest.mark.parametrize("write", [write_new, write_replacing])
def test_a_file_is_on_the_disk_before_it_gets_its_name(tmp_path, monkeypatch, write):
    """After a power loss a name must not hold an empty file: the data is flushed (fsync of the file) before the
    name is linked or renamed to it, and the folder after."""
    import os
    events = []
    real_fsync, real_link, real_replace = os.fsync, os.link, os.replace

    def fsync(descriptor):
        events.append(("fsync", "folder" if os.path.isdir(f"/proc/self/fd/{descriptor}") else "file",
                       os.fstat(descriptor).st_size))
        return real_fsync(descriptor)

    def named(kind, real):
        def name(src, dst, *args, **kwargs):
            events.append((kind, os.path.basename(dst)))
            return real(src, dst, *args, **kwargs)
        return name
    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "link", named("name", real_link))
    monkeypatch.setattr(files.os, "replace", named("name", real_replace))
    write(str(tmp_path / "net.safetensors"), TENSORS, {"format": "test"})
    named_at = next(i for i, e in enumerate(events) if e[0] == "name")
    assert any(e[:2] == ("fsync", "file") and e[2] > 0 for e in events[:named_at]), events
    assert ("fsync", "folder") in [e[:2] for e in events[named_at:]], events
