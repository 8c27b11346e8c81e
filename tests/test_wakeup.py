"""File events as a hint to read sooner: watched folders, including ones made later or made again."""

from __future__ import annotations

import shutil

from bounce_exporter.sources.wakeup import Wakeup

EVENT_WAIT = 5.0  # bound for an inotify event to arrive (they take milliseconds)


def written(wakeup: Wakeup, path) -> bool:
    """Clear the hint, append to ``path``, and tell whether the append woke the reader."""
    wakeup.event.clear()
    with open(path, "ab") as handle:
        handle.write(b"line\n")
    return wakeup.event.wait(EVENT_WAIT)


def test_an_append_to_the_followed_file_wakes_the_reader(tmp_path):
    wakeup = Wakeup([str(tmp_path / "mail.log")])
    try:
        assert written(wakeup, tmp_path / "mail.log")
    finally:
        wakeup.stop()


def test_a_folder_missing_at_start_is_watched_once_it_appears(tmp_path):
    folder = tmp_path / "later"
    wakeup = Wakeup([str(folder / "mail.log")])
    try:
        wakeup.wait(0)
        assert not wakeup.event.is_set()
        folder.mkdir()
        wakeup.wait(0)  # the next wait watches it, and wakes the reader once for what is there
        assert wakeup.event.is_set()
        assert written(wakeup, folder / "mail.log")
    finally:
        wakeup.stop()


def test_a_folder_made_again_is_watched_again(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    wakeup = Wakeup([str(folder / "mail.log")])
    try:
        assert written(wakeup, folder / "mail.log")
        wakeup.event.clear()
        shutil.rmtree(folder)
        assert wakeup.event.wait(EVENT_WAIT)  # the file's deletion: events of the old folder are in
        folder.mkdir()
        wakeup.wait(0)
        assert written(wakeup, folder / "mail.log")
    finally:
        wakeup.stop()


def test_other_files_in_the_folder_do_not_wake_the_reader(tmp_path):
    wakeup = Wakeup([str(tmp_path / "mail.log")])
    try:
        wakeup.event.clear()
        (tmp_path / "syslog").write_bytes(b"other\n")
        assert not wakeup.event.wait(0.3)
    finally:
        wakeup.stop()
