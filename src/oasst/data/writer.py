"""Streaming writers for oasst JSONL exports.

One JSON object per line, UTF-8 without `\\u` escapes, in the released files' layout (`", "` and
`": "` separators), so a file read and written back is byte-identical. A path ending in `.gz` is
gzipped. Writing to a path goes to a temporary file beside it that replaces the target only when every
item was written: a failed export never leaves half a file behind, nor destroys the previous one.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import secrets
import stat
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any, cast

from pydantic import BaseModel

from oasst.data.schemas import ExportMessageNode, ExportMessageTree

__all__ = ["Target", "write_jsonl_text", "write_message_trees", "write_messages"]

Target = str | os.PathLike[str] | IO[bytes] | IO[str]
"""A path (`.gz` = gzip), `"-"` for stdout, or an open binary or text file that is left open."""


def _replaceable(path: str) -> bool:
    # Only regular files may be swapped for a temporary file; a FIFO or /dev/null must be written to.
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True


@contextlib.contextmanager
def _open_target(target: Target, compresslevel: int = 6) -> Iterator[IO[Any]]:
    if not isinstance(target, str | os.PathLike):
        yield target
        return
    path = os.fspath(target)
    if path == "-":
        sys.stdout.flush()  # keep anything already printed ahead of the export
        yield getattr(sys.stdout, "buffer", sys.stdout)
        return
    if not _replaceable(path):
        with open(path, "wb") as raw:
            yield raw
        return
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as a plain open() of the target would
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "wb") as raw:
            if path.endswith(".gz"):
                # mtime=0 and a fixed name make the output reproducible byte for byte
                name = os.path.basename(path)[: -len(".gz")]
                gz = gzip.GzipFile(
                    filename=name, mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0
                )
                with cast(IO[bytes], gz) as out:
                    yield out
            else:
                yield raw
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_jsonl(target: Target, items: Iterable[BaseModel], exclude_none: bool) -> int:
    count = 0
    with _open_target(target) as out:
        text = isinstance(out, io.TextIOBase)
        for item in items:
            line = json.dumps(item.model_dump(mode="json", exclude_none=exclude_none), ensure_ascii=False)
            out.write(line + "\n" if text else (line + "\n").encode("utf-8"))
            count += 1
        out.flush()
    return count


def write_message_trees(
    target: Target, trees: Iterable[ExportMessageTree], exclude_none: bool = False
) -> int:
    """Write one tree per line and return how many were written.

    `trees` may be a generator; it is consumed one tree at a time. `exclude_none=True` leaves out null
    fields (as the original backend's export does) instead of writing them out as `null` (as the HF
    releases do); the original library accepted this flag and ignored it.
    """
    return _write_jsonl(target, trees, exclude_none)


def write_messages(target: Target, messages: Iterable[ExportMessageNode], exclude_none: bool = False) -> int:
    """Write one message per line (a flat export) and return how many were written.

    Streams like `write_message_trees`. Messages are written as they are, replies included if they have
    any; use `read_messages` or `oasst.data.rebuild.flatten` to turn trees into flat rows first.
    """
    return _write_jsonl(target, messages, exclude_none)


def write_jsonl_text(target: Target, chunks: Iterable[str], *, compresslevel: int = 6) -> None:
    """Write text that already is JSON lines: each chunk holds whole lines, each ending in a newline.

    For writers that serialise the lines themselves (the backend's export builds them from database rows);
    the target is handled as by `write_message_trees`, `compresslevel` (1-9) applying to `.gz` paths.
    """
    with _open_target(target, compresslevel) as out:
        text = isinstance(out, io.TextIOBase)
        for chunk in chunks:
            out.write(chunk if text else chunk.encode("utf-8"))
        out.flush()
