"""sgeo.atomic: the one way sgeo replaces a local file (store objects, answers, checkpoint records, JSONs)."""

from __future__ import annotations

import pytest

from sgeo import atomic


def test_a_write_replaces_the_file_whole_and_a_failed_one_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "answers.jsonl"
    atomic.write_text(path, "old\n")
    atomic.write_text(path, "new é\n", fsync=True)
    assert path.read_bytes() == "new é\n".encode()
    atomic.write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"

    target = tmp_path / "a_directory"
    target.mkdir()
    (target / "kept").write_text("x")
    with pytest.raises(OSError):
        atomic.write_bytes(target, b"data")  # os.replace cannot put a file over a non-empty directory
    assert (target / "kept").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_directory", "answers.jsonl"]  # no temp left
