"""Complete lines out of bytes: the one line splitter of every source (file, catch-up, stdin).

A chunk's complete lines are handed over as they are in the file (a ``Block``: no copy per line);
the partial last line is held until its newline, and flushed when its file is done. A line over
``max_line_bytes`` is never buffered whole: it is handed over as an empty line (``TOO_LONG``) and
counted, so line numbers stay right. A CR before the newline is part of the line ending.
"""

from __future__ import annotations

from collections.abc import Callable

from bounce_exporter.sources.position import Position

CHUNK_SIZE = 1 << 20  # bytes read at once
TOO_LONG = b""  # stands in for a line over max_line_bytes


def count_newlines(data: bytes) -> int:
    return data.count(b"\n")


# A block's lines, counted: its newlines. ``bytes.count`` looks at one byte at a time; the wiring
# (``app``) hands over the C extension's count when it runs (``parsers.accel.line_counter``).
_count_lines: Callable[[bytes], int] = count_newlines


def use_line_counter(count: Callable[[bytes], int] | None) -> None:
    """Count blocks' lines with ``count`` (the same number as ``count_newlines``), or with
    ``count_newlines`` again (None)."""
    global _count_lines
    _count_lines = count or count_newlines


class Batch(list):
    """Complete lines read at once, how many of them were over-long, and the position after them."""

    __slots__ = ("position", "too_long")

    def __init__(self, lines: list[bytes], position: Position | None, too_long: int = 0):
        super().__init__(lines)
        self.position = position
        self.too_long = too_long


class Block:
    """Complete lines read at once, as they are in the file: ``data`` holds ``lines`` lines, each
    ending with a newline (a CR before it is part of the line ending, the reader removes it). A
    line over ``max_line_bytes`` is there as an empty line and counted in ``too_long``.
    ``position`` is where the next unread line starts."""

    __slots__ = ("data", "lines", "position", "too_long")

    def __init__(self, data: bytes, position: Position | None, too_long: int = 0):
        self.data = data
        self.lines = _count_lines(data)
        self.position = position
        self.too_long = too_long

    def batch(self) -> Batch:
        """The same lines as a list, newline and CR removed."""
        lines = self.data.split(b"\n")
        lines.pop()  # after the last newline: nothing
        if b"\r" in self.data:
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        return Batch(lines, self.position, self.too_long)



class SplitsLines:
    """For sources that split a byte stream with a ``LineSplitter`` (``_lines``): their
    ``max_line_bytes`` is the splitter's, so a reload that sets it takes effect at once."""

    _lines: LineSplitter

    @property
    def max_line_bytes(self) -> int:
        return self._lines.max_line_bytes

    @max_line_bytes.setter
    def max_line_bytes(self, limit: int) -> None:
        self._lines.max_line_bytes = limit


class LineSplitter:
    """Splits a byte stream into blocks of complete lines, holding the partial last one."""

    __slots__ = ("max_line_bytes", "partial", "skipping")

    def __init__(self, max_line_bytes: int):
        self.max_line_bytes = max_line_bytes
        self.partial = b""
        self.skipping = False  # inside a line over the limit

    def feed(self, chunk: bytes | memoryview) -> tuple[bytes, int, int] | None:
        """``(data, too_long, held)``: the complete lines that end in this chunk (the held partial
        line first), how many of them were over the limit, and the bytes after the last newline
        (held, or skipped once over the limit); None when the chunk ends no line. ``chunk`` is
        bytes, or a memoryview of the start of a reused bytearray (``FileSource`` reads into
        one): what is returned and held is copied out of it, once."""
        text = chunk.obj if isinstance(chunk, memoryview) else chunk  # find, rfind: on the buffer
        size = len(chunk)
        end = text.rfind(b"\n", 0, size) + 1
        if not end:
            self._hold(chunk)
            return None
        too_long = 0
        if self.skipping:  # the chunk's first line ends a line over the limit
            # an empty line stands in for it
            data = b"".join((b"\n", chunk[text.find(b"\n", 0, size) + 1 : end]))
            too_long = 1
            self.skipping = False
        elif self.partial or text is not chunk:
            # one copy: the held partial line and the chunk's complete lines joined at once
            # (``partial + chunk[:end]`` copied the chunk twice)
            data = b"".join((self.partial, memoryview(chunk)[:end]))
        else:
            data = chunk[:end]  # type: ignore[assignment]  # bytes: chunk is bytes here
        self.partial = b""
        self._hold(chunk[end:])
        data, over = blank_long_lines(data, self.max_line_bytes)
        return data, too_long + over, size - end

    def flush(self) -> tuple[bytes, int] | None:
        """The held partial line as ``(data, too_long)`` (its file is done), or None."""
        partial, self.partial = self.partial, b""
        skipping, self.skipping = self.skipping, False
        if skipping:
            return b"\n", 1
        if partial:
            return partial + b"\n", 0
        return None

    def reset(self) -> None:
        """Forget the held partial line (it is read again from elsewhere)."""
        self.partial, self.skipping = b"", False

    def _hold(self, tail: bytes | memoryview) -> None:
        """Keep the start of a partial line, unless it is already over the limit."""
        if tail and not self.skipping:
            self.partial += tail
            if len(self.partial) > self.max_line_bytes:
                self.partial = b""
                self.skipping = True


def blank_long_lines(data: bytes, limit: int) -> tuple[bytes, int]:
    """``data`` (complete lines) with each line over ``limit`` bytes made empty, and their number.

    Exact without looking at every line: from a line start ``i``, the last newline within the next
    ``limit + 1`` bytes ends every line that starts before it, and none of those is over the limit;
    only when there is no newline there is the line at ``i`` too long. With lines much shorter than
    the limit this is one ``rfind`` per ``limit`` bytes."""
    kept: list[bytes] = []
    start = i = 0
    size = len(data)
    while size - i > limit + 1:  # room left for a line over the limit and its newline
        last = data.rfind(b"\n", i, i + limit + 1)
        if last >= 0:
            i = last + 1
            continue
        kept.append(data[start:i])
        start = i = data.index(b"\n", i + limit + 1)  # keep its newline: an empty line
        i += 1
    if not kept:
        return data, 0
    kept.append(data[start:])
    return b"".join(kept), len(kept) - 1
