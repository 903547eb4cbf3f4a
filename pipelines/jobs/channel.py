"""Messages between the job runner and its workers: length-prefixed pickles over a pipe.

Both ends are processes of this program started by the runner; nothing read from files or the
network goes through here.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

_HEADER = struct.Struct("<Q")


def write_frame(stream, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def read_frame(stream) -> Any | None:
    """The next object, or None at the end of the stream (the writer exited)."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    data = _read_exactly(stream, _HEADER.unpack(header)[0])
    return None if data is None else pickle.loads(data)


def _read_exactly(stream, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
