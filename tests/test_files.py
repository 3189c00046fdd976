"""Atomic writes: a reader never sees half a file, and a failed or interrupted write leaves nothing behind."""

from __future__ import annotations

import os
import stat
import sys
import threading

import pytest
from PIL import Image

from impasto.files import atomic_write
from impasto.images import save_image

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="file modes and umask are POSIX")


@pytest.fixture
def umask():
    """Set the process umask for one test, then put the old one back."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("old")
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".notes.txt.")  # hidden, and says what it is for
        tmp.write_text("new")
        assert target.read_text() == "old"  # a reader still sees the whole old file until the end
    assert target.read_text() == "new"
    assert names(tmp_path) == ["notes.txt"]


def test_a_writer_that_fails_halfway_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "job.json"
    target.write_text('{"status": "running"}')
    with pytest.raises(OSError, match="No space left"):
        with atomic_write(target) as tmp:
            tmp.write_text('{"stat')  # half written ...
            raise OSError(28, "No space left on device")  # ... when the disk fills up
    assert target.read_text() == '{"status": "running"}'
    assert names(tmp_path) == ["job.json"]


def test_a_failed_first_write_creates_nothing(tmp_path):
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "out.png") as tmp:
            tmp.write_bytes(b"\x89PNG")
            raise ValueError("the encoder gave up")
    assert names(tmp_path) == []


def test_ctrl_c_during_a_write_leaves_no_stray_file(tmp_path):
    target = tmp_path / "out.wav"
    target.write_bytes(b"old sound")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half a new so")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old sound"
    assert names(tmp_path) == ["out.wav"]


def test_a_suffix_lets_a_writer_pick_the_format_from_the_name(tmp_path):
    target = tmp_path / "picture.jpg"
    with atomic_write(target, suffix=".jpg") as tmp:
        assert tmp.suffix == ".jpg"
        Image.new("RGB", (8, 8), "red").save(tmp)  # no format=: Pillow reads it from the name
    assert Image.open(target).format == "JPEG"
    assert names(tmp_path) == ["picture.jpg"]


@posix_only
def test_an_output_image_keeps_normal_permissions(tmp_path, umask):
    target = save_image(Image.new("RGB", (8, 8)), tmp_path / "out.png")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # readable by others, as any file the user makes


@posix_only
def test_permissions_follow_the_umask(tmp_path, umask):
    umask(0o077)  # a user who keeps their files private gets private outputs
    with atomic_write(tmp_path / "private.txt") as tmp:
        tmp.write_text("mine")
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600


def test_threads_writing_one_file_at_once_never_mix_their_versions(tmp_path):
    target = tmp_path / "job.json"
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for _ in range(20):
                with atomic_write(target) as tmp:
                    tmp.write_text(str(n) * 10_000)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    text = target.read_text()
    assert len(text) == 10_000 and len(set(text)) == 1  # one writer's whole version
    assert names(tmp_path) == ["job.json"]


def test_a_frames_folder_whose_run_file_failed_to_write_is_still_ours(tmp_path, monkeypatch):
    """A stray temporary file in a video's frames folder made the next run call it foreign."""
    from pathlib import Path

    from impasto.video.run import FrameStore

    folder = tmp_path / "frames"
    real_write_text = Path.write_text

    def disk_full(self, *args, **kwargs):
        real_write_text(self, "{\n", *args[1:], **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        FrameStore(folder, {"video": "a.mp4"}, overwrite=False)
    assert names(folder) == []
    monkeypatch.undo()
    FrameStore(folder, {"video": "a.mp4"}, overwrite=False)  # run again: not refused as another program's folder
    assert names(folder) == ["run.json"]
