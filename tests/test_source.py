"""The tailer on real files: start position, partial lines, rotation, truncation, outages, limits."""

from __future__ import annotations

import os

from bounce_exporter.sources.files import FileSource


def read(source: FileSource) -> list[bytes]:
    return [line for batch in source.read_batches() for line in batch]


def test_first_open_seeks_to_the_end(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"old 1\nold 2\n")
    source = FileSource(str(log))
    assert read(source) == []
    with log.open("ab") as handle:
        handle.write(b"new 1\n")
    assert read(source) == [b"new 1"]


def test_from_start_reads_existing_lines(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"old 1\r\nold 2\n")
    assert read(FileSource(str(log), from_start=True)) == [b"old 1", b"old 2"]


def test_partial_line_is_held_until_its_newline(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    source = FileSource(str(log))
    read(source)
    with log.open("ab") as handle:
        handle.write(b"a\npar")
    assert read(source) == [b"a"]
    with log.open("ab") as handle:
        handle.write(b"tial\n")
    assert read(source) == [b"partial"]


def test_rename_and_create_drains_the_old_file_then_reads_the_new_one(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    source = FileSource(str(log))
    read(source)
    with log.open("ab") as handle:
        handle.write(b"before\nlast words")
    os.rename(log, tmp_path / "mail.log.1")
    log.write_bytes(b"fresh\n")
    assert read(source) == [b"before", b"last words", b"fresh"]
    assert source.rotations == 1


def test_renamed_away_and_not_yet_recreated_keeps_the_old_file(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    source = FileSource(str(log))
    read(source)
    os.rename(log, tmp_path / "mail.log.1")
    with (tmp_path / "mail.log.1").open("ab") as handle:
        handle.write(b"late line\n")
    assert read(source) == [b"late line"]
    log.write_bytes(b"new\n")
    assert read(source) == [b"new"]


def test_copytruncate_restarts_at_zero_and_counts(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    source = FileSource(str(log))
    read(source)
    with log.open("ab") as handle:
        handle.write(b"one\ntwo\n")
    assert read(source) == [b"one", b"two"]
    with log.open("r+b") as handle:
        handle.truncate(0)
    with log.open("ab") as handle:
        handle.write(b"3\n")
    assert read(source) == [b"3"]
    assert source.truncations == 1


def test_missing_file_is_down_then_read_from_its_start_when_it_appears(tmp_path):
    log = tmp_path / "mail.log"
    source = FileSource(str(log))
    assert read(source) == []
    assert (source.up, source.down_reason) == (False, "No such file or directory")
    log.write_bytes(b"first\n")
    assert read(source) == [b"first"]
    assert source.up


def test_directory_is_not_a_log(tmp_path):
    source = FileSource(str(tmp_path))
    assert read(source) == []
    assert (source.up, source.down_reason) == (False, "not a regular file")


def test_unreadable_file_is_down_until_fixed(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"x\n")
    os.chmod(log, 0)
    source = FileSource(str(log), from_start=True)
    if os.geteuid() == 0:  # root reads anything: make it unreadable another way
        os.chmod(log, 0o644)
        log.unlink()
        log.mkdir()
        assert read(source) == []
        assert not source.up
        log.rmdir()
        log.write_bytes(b"x\n")
    else:
        assert read(source) == []
        assert not source.up
        os.chmod(log, 0o644)
    assert read(source) == [b"x"]
    assert source.up


def test_overlong_lines_are_counted_and_handed_over_empty(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"x" * 300 + b"\nok\n" + b"y" * 200)
    source = FileSource(str(log), from_start=True, max_line_bytes=256, chunk_size=64)
    assert read(source) == [b"", b"ok"]
    with log.open("ab") as handle:
        handle.write(b"y" * 100 + b"\nafter\n")
    assert read(source) == [b"", b"after"]
    assert source.lines_too_long == 2


def test_close_flushes_the_partial_line(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"a\nunfinished")
    source = FileSource(str(log), from_start=True)
    assert read(source) == [b"a"]
    assert source.close() == [b"unfinished"]
