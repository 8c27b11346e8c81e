"""Log sources: where lines come from (a followed file through every rotation, a rotated file read
once, standard input, the systemd journal), each handing over complete lines with their position.

``files`` (the tailer, its rules in its docstring), ``rotation`` (the rotated-name rule, finding
generations), ``lines`` (the one line splitter), ``position`` (what is saved), ``opening``,
``catchup``, ``stdin``, ``journal``, ``wakeup`` (watchdog: a hint to read sooner).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from bounce_exporter.sources.lines import Batch, Block


class Resumable(Protocol):
    """A place in a source that survives a restart (a file ``Position``, a ``JournalCursor``)."""

    def to_state(self) -> dict: ...


class Source(Protocol):
    """What every source offers the pipeline.

    ``begin(saved)`` opens it at a saved place (None: its own rule) and returns where it starts;
    ``read_batches()`` yields the complete lines there are now, each batch with the position after
    it (None where the source has no position to save); ``close()`` lets go and returns the partial
    last line held, if any. ``path`` is the file to watch for changes, None for sources that wake
    the read loop themselves. The counts are the source's self-metrics."""

    max_line_bytes: int  # set again at a reload

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> str | None: ...

    @property
    def up(self) -> bool: ...

    @property
    def read_errors(self) -> int: ...

    @property
    def truncations(self) -> int: ...

    @property
    def rotations(self) -> int: ...

    @property
    def lines_too_long(self) -> int: ...

    def begin(self, saved: Any = None) -> Resumable | None: ...

    def read_batches(self) -> Iterator[Batch]: ...

    def close(self) -> list[bytes]: ...


@runtime_checkable
class BlockSource(Source, Protocol):
    """A source that can also hand over its lines as whole blocks (``FileSource``), for parsers
    with ``parse_block``; the pipeline checks for it once, when the source is added."""

    def read_blocks(self) -> Iterator[Block]: ...
