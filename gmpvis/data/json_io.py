"""JSON files in and out: one reader for annotation and results files, atomic writes.

- :func:`read_json` parses a whole file (or the results member of a ``.zip``);
  :func:`iter_json_list` streams the elements of a top-level JSON list, one at a time, so a
  results file of any size never exists as one Python object tree.
- :func:`zip_json_member` picks the member of a results ``.zip`` the way the submission
  servers do: ``results.json`` at the root; a single JSON member of another name is read
  with a warning; several JSON members and none named ``results.json`` are refused.
- :func:`atomic_write` writes a temporary file in the target's folder, fsyncs it and
  ``os.replace``-s it over the target: a reader sees the old file or the new one, never
  half of one, whatever kills the writer.

Every malformed input raises :class:`InputFileError` (a ``ValueError``) naming the file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

_CHUNK_CHARS = 1 << 20
_WS = " \t\n\r"


class InputFileError(ValueError):
    """A missing-content, truncated, non-JSON or malformed input file; names the file."""


def _check_file(path: str) -> None:
    if os.path.isdir(path):
        raise InputFileError(f"{path} is a directory, not a JSON file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")


def zip_json_member(zf: zipfile.ZipFile, path: str) -> str:
    """Name of the JSON member of ``zf`` to read (see the module docstring)."""
    names = [n for n in zf.namelist() if n.endswith(".json") and not n.startswith("__MACOSX/")]
    if "results.json" in names:
        return "results.json"
    if not names:
        raise InputFileError(f"{path} holds no .json file (expected results.json at its root)")
    if len(names) > 1:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise InputFileError(
            f"{path} holds {len(names)} JSON files ({shown}) and none is results.json at "
            "its root: which one to score is ambiguous"
        )
    warnings.warn(
        f"{path}: reading its only JSON member {names[0]!r}; the submission servers "
        "require it to be named results.json at the root of the zip",
        UserWarning,
        stacklevel=3,
    )
    return names[0]


def _open_text(path: str) -> tuple[io.TextIOBase, str]:
    """A UTF-8 text stream of ``path`` (or of its JSON member for a ``.zip``) and its label."""
    _check_file(path)
    if not path.lower().endswith(".zip"):
        return open(path, encoding="utf-8"), path
    try:
        zf = zipfile.ZipFile(path)
        name = zip_json_member(zf, path)
        raw = zf.open(name)
    except zipfile.BadZipFile as exc:
        raise InputFileError(f"{path} is not a valid zip file ({exc})") from None
    return io.TextIOWrapper(raw, encoding="utf-8"), f"{path}:{name}"


def _decode_error(label: str, exc: Exception, empty: bool, offset: int = -1) -> InputFileError:
    """The error for a failed parse; ``offset``: characters of the file before the parsed
    text (a streamed file reports a character position instead of line and column)."""
    if empty:
        return InputFileError(f"{label} is empty")
    if isinstance(exc, UnicodeDecodeError):
        return InputFileError(f"{label} is not valid JSON (not UTF-8 text)")
    if isinstance(exc, json.JSONDecodeError):
        where = (
            f"line {exc.lineno}, column {exc.colno}"
            if offset < 0
            else f"character {offset + exc.pos + 1}"
        )
        return InputFileError(f"{label} is not valid JSON (truncated?): {exc.msg} ({where})")
    return InputFileError(f"{label} is not valid JSON: {exc}")


def read_json(path: str | os.PathLike, *, error: type[InputFileError] = InputFileError):
    """Parse a JSON file (a ``.zip``: its results member); ``error`` is the type raised."""
    path = os.fspath(path)
    stream, label = _open_text(path)
    text = None
    try:
        with stream:
            text = stream.read()
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(str(_decode_error(label, exc, text is not None and not text.strip()))) from None


def iter_json_list(
    path: str | os.PathLike, *, what: str = "results", chunk_chars: int = _CHUNK_CHARS
) -> Iterator:
    """The elements of the top-level JSON list in ``path``, parsed one at a time.

    Holds one chunk of text and one element at a time. A file whose top level is not a list
    raises ``"<what> must be a JSON list, got <type>"``; a truncated one names the file.
    """
    path = os.fspath(path)
    stream, label = _open_text(path)
    decoder = json.JSONDecoder()
    with stream:
        buf, pos, eof, dropped = "", 0, False, 0  # dropped: characters before buf

        def more() -> bool:  # append a chunk; False at the end of the file
            nonlocal buf, pos, eof, dropped
            try:
                chunk = "" if eof else stream.read(chunk_chars)
            except UnicodeDecodeError as exc:
                raise _decode_error(label, exc, False) from None
            eof = eof or not chunk
            dropped += pos
            buf, pos = buf[pos:] + chunk, 0
            return bool(chunk)

        def skip_ws() -> str:  # next non-blank character ("" at the end of the file)
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in _WS:
                    pos += 1
                if pos < len(buf) or not more():
                    return buf[pos] if pos < len(buf) else ""

        first = skip_ws()
        if first == "":
            raise InputFileError(f"{label} is empty")
        if first != "[":  # not a list: parse it all to say what it is (or why it is not JSON)
            while more():
                pass
            try:
                kind = type(json.loads(buf)).__name__
            except json.JSONDecodeError as exc:
                raise _decode_error(label, exc, False) from None
            raise InputFileError(f"{label}: {what} must be a JSON list, got {kind}")
        pos += 1
        if skip_ws() == "]":
            pos += 1
        else:
            while True:
                skip_ws()
                try:
                    item, end = decoder.raw_decode(buf, pos)
                    complete = end < len(buf) or eof  # a number may go on in the next chunk
                except json.JSONDecodeError as exc:
                    if more():  # the element goes on in the next chunk
                        continue
                    raise _decode_error(label, exc, False, dropped) from None
                if not complete:
                    more()
                    continue
                pos = end
                yield item
                sep = skip_ws()
                pos += 1
                if sep == "]":
                    break
                if sep != ",":
                    where = "the end of the file" if sep == "" else repr(sep)
                    raise InputFileError(
                        f"{label} is not valid JSON (truncated?): expected ',' or ']' "
                        f"after element, found {where}"
                    )
        if skip_ws() != "":
            raise InputFileError(f"{label} is not valid JSON: extra data after the list")


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a fsynced temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
