"""The file tools: `read`, `write`, `edit`, `glob` and `grep`.

Plain blocking functions (the server runs them in threads). Each returns the text for the
model or raises `ToolFailure`; an `OSError` escaping them is turned into an error result by
the caller. Memory stays bounded whatever the file sizes: files are read line by line, and
no line is held beyond a fixed length.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from paddock.sandbox.base import ToolFailure, resolve

READ_LIMIT = 256 * 1024
EDIT_LIMIT = 10 * 1024 * 1024
GLOB_RESULTS = 200
GREP_OUTPUT_LIMIT = 100 * 1024
GREP_LINE_CHARS = 2000
WALK_FILES = 100_000
GREP_SECONDS = 60.0
_GREP_SCAN_BYTES = 1024 * 1024
"""Only the first MiB of a line is searched."""
_SNIFF = 8192
_SKIPPED_DIRS = frozenset({".git"})


def read(workdir: Path, file_path: str, view_range: tuple[int, int] | None) -> str:
    """Lines of a text file, numbered like `cat -n`; `view_range` is 1-based inclusive and
    an end <= 0 means the end of the file. Output is capped at READ_LIMIT with a notice that
    says where to continue."""
    path = _regular_file(workdir, file_path)
    start, end = view_range or (1, 0)
    if start < 1 or 0 < end < start:
        raise ToolFailure(
            f"view_range [{start}, {end}] is invalid: lines are 1-based and end >= start"
        )
    out: list[str] = []
    size = 0
    number = 0
    with path.open("rb") as f:
        _refuse_binary(f, path)
        for number, (raw, cut) in enumerate(_lines(f, READ_LIMIT), start=1):
            if number < start:
                continue
            if end > 0 and number > end:
                break
            line = f"{number:>6}\t{_text(raw)}" + (" [... line truncated]" if cut else "")
            size += len(line) + 1
            if size > READ_LIMIT and out:
                out.append(
                    f"[output truncated at {READ_LIMIT // 1024} KiB after line {number - 1}; "
                    f"continue with view_range [{number}, {end}]]"
                )
                break
            out.append(line)
    if out:
        return "\n".join(out)
    if number == 0:
        return f"{path} is empty"
    return f"no lines in view_range [{start}, {end}]: {path} has {number} lines"


def write(workdir: Path, file_path: str, content: str) -> str:
    """Create or overwrite a file with `content` (UTF-8), creating parent directories."""
    path = resolve(workdir, file_path)
    if path.is_dir():
        raise ToolFailure(f"{path} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode()
    path.write_bytes(data)
    return f"wrote {len(data):,} bytes to {path}"


def edit(workdir: Path, file_path: str, old: str, new: str, replace_all: bool) -> str:
    """Replace `old` by `new`; refused unless `old` occurs exactly once, or at least once
    with `replace_all`. The file is untouched when refused."""
    path = _regular_file(workdir, file_path)
    if not old:
        raise ToolFailure("old_string is empty; use write to create or overwrite a file")
    if old == new:
        raise ToolFailure("old_string and new_string are identical; nothing to change")
    if path.stat().st_size > EDIT_LIMIT:
        raise ToolFailure(f"{path} is larger than {EDIT_LIMIT // 2**20} MiB; edit it with bash")
    try:
        text = path.read_bytes().decode()
    except UnicodeDecodeError:
        raise ToolFailure(f"{path} is not UTF-8 text; edit it with bash") from None
    count = text.count(old)
    if count == 0:
        raise ToolFailure(
            f"old_string was not found in {path}; read the file and copy the text exactly"
        )
    if count > 1 and not replace_all:
        raise ToolFailure(
            f"old_string occurs {count} times in {path}; add surrounding lines to make it unique, "
            "or set replace_all to replace every occurrence"
        )
    path.write_bytes(text.replace(old, new).encode())
    return f"edited {path}: {count} replacement{'s' if count > 1 else ''}"


def glob(workdir: Path, pattern: str, path: str | None) -> str:
    """Files matching a doublestar pattern (`**`, `*`, `?`, `[...]`, `{a,b}`) under `path`
    (default: the workdir), newest first, at most GLOB_RESULTS. `.git` is skipped."""
    root = resolve(workdir, path) if path else workdir
    parts = pattern.split("/")
    if pattern.startswith("/"):
        root, parts = Path("/"), parts[1:]
    # Walk from the literal prefix of the pattern, not from the root.
    while len(parts) > 1 and not _MAGIC.search(parts[0]):
        root = root / parts.pop(0)
    root = Path(os.path.normpath(root))
    rest = "/".join(parts)
    if not root.is_dir():
        raise ToolFailure(f"{root} is not a directory")
    matcher = _glob_regex(rest)
    depth = None if "**" in rest else len(parts)
    found: list[tuple[float, str]] = []
    walk = _Walk(root, depth)
    for full, rel in walk:
        if matcher.match(rel):
            try:
                found.append((full.stat().st_mtime, str(full)))
            except OSError:
                continue
    if not found:
        return f"no files match {pattern!r} under {root}"
    found.sort(reverse=True)
    lines = [name for _, name in found[:GLOB_RESULTS]]
    if len(found) > GLOB_RESULTS:
        lines.append(f"[showing the {GLOB_RESULTS} newest of {len(found):,} matches]")
    if not walk.complete:
        lines.append(f"[search stopped after {WALK_FILES:,} files; narrow the pattern or path]")
    return "\n".join(lines)


def grep(workdir: Path, pattern: str, path: str | None, glob_filter: str | None) -> str:
    """`file:line:text` for every line matching the regular expression `pattern` (Python
    `re` syntax) in the files under `path`, optionally only files matching `glob_filter`
    (a name pattern, or a path pattern if it holds a `/`). Binary files and `.git` are
    skipped; lines are cut at GREP_LINE_CHARS and the output at GREP_OUTPUT_LIMIT."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ToolFailure(f"invalid regular expression {pattern!r}: {exc}") from None
    target = resolve(workdir, path) if path else workdir
    if not target.exists():
        raise ToolFailure(f"{target} does not exist")
    wanted = _glob_regex(glob_filter) if glob_filter else None
    by_name = glob_filter is not None and "/" not in glob_filter
    walk = _Walk(target, None) if target.is_dir() else None
    files = walk if walk is not None else [(target, target.name)]
    deadline = time.monotonic() + GREP_SECONDS
    out: list[str] = []
    size = 0
    for full, rel in files:
        if wanted and not wanted.match(full.name if by_name else rel):
            continue
        if time.monotonic() > deadline:
            out.append(f"[search stopped after {GREP_SECONDS:g} s; narrow the pattern or path]")
            break
        for line in _grep_file(full, regex):
            size += len(line) + 1
            if size > GREP_OUTPUT_LIMIT:
                limit = GREP_OUTPUT_LIMIT // 1024
                out.append(f"[output truncated at {limit} KiB; narrow the pattern or path]")
                return "\n".join(out)
            out.append(line)
    if walk is not None and not walk.complete:
        out.append(f"[search stopped after {WALK_FILES:,} files; narrow the path]")
    return "\n".join(out) if out else f"no matches for {pattern!r} under {target}"


def _grep_file(path: Path, regex: re.Pattern[str]) -> Iterator[str]:
    try:
        with path.open("rb") as f:
            if b"\0" in f.read(_SNIFF):
                return
            f.seek(0)
            for number, (raw, _) in enumerate(_lines(f, _GREP_SCAN_BYTES), start=1):
                text = _text(raw)
                if regex.search(text):
                    if len(text) > GREP_LINE_CHARS:
                        text = text[:GREP_LINE_CHARS] + " [... line truncated]"
                    yield f"{path}:{number}:{text}"
    except OSError:
        return  # unreadable files are skipped, as grep -s does


def _regular_file(workdir: Path, file_path: str) -> Path:
    path = resolve(workdir, file_path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ToolFailure(f"{path} does not exist") from None
    if stat.S_ISDIR(mode):
        raise ToolFailure(f"{path} is a directory; list it with glob or bash")
    if not stat.S_ISREG(mode):
        raise ToolFailure(f"{path} is not a regular file")
    return path


def _refuse_binary(f: BinaryIO, path: Path) -> None:
    if b"\0" in f.read(_SNIFF):
        raise ToolFailure(
            f"{path} is a binary file; inspect it with bash (for example xxd or file)"
        )
    f.seek(0)


def _lines(f: BinaryIO, limit: int) -> Iterator[tuple[bytes, bool]]:
    """Each line without its line break, cut to `limit` bytes, and whether it was cut; at
    most `limit` bytes of a line are ever in memory."""
    while line := f.readline(limit + 1):
        if line.endswith(b"\n"):
            yield line[:-1], False
        elif len(line) <= limit:
            yield line, False  # last line, no line break
        else:
            yield line[:limit], True
            while (rest := f.readline(limit)) and not rest.endswith(b"\n"):
                pass


def _text(raw: bytes) -> str:
    return raw.decode(errors="replace").removesuffix("\r")


class _Walk:
    """Regular files under `root` (not following directory symlinks, skipping `.git`) with
    their `/`-separated path relative to `root`, at most `depth` levels deep and at most
    WALK_FILES files; `complete` says afterwards whether the walk saw everything."""

    def __init__(self, root: Path, depth: int | None) -> None:
        self.root = root
        self.depth = depth
        self.complete = True

    def __iter__(self) -> Iterator[tuple[Path, str]]:
        seen = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            level = 0 if rel_dir == "." else rel_dir.count(os.sep) + 1
            if self.depth is not None and level + 1 >= self.depth:
                dirnames.clear()
            else:
                dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
            for name in sorted(filenames):
                full = Path(dirpath, name)
                if not full.is_file():
                    continue
                seen += 1
                if seen > WALK_FILES:
                    self.complete = False
                    return
                yield full, name if level == 0 else f"{rel_dir}/{name}"


_MAGIC = re.compile(r"[*?\[{]")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(_glob_body(pattern) + r"\Z", re.DOTALL)


def _glob_body(pattern: str) -> str:
    """Doublestar to regex: `**/` is any number of directories, `*` and `?` stay within one
    path segment, `[...]` is a class (`[!...]` negated), `{a,b}` alternatives."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        char = pattern[i]
        close = {"[": "]", "{": "}"}.get(char)
        end = pattern.find(close, i + 2 if char == "[" else i + 1) if close else -1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and end > 0:
            body = pattern[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        elif char == "{" and end > 0:
            out.append(
                "(?:" + "|".join(_glob_body(alt) for alt in pattern[i + 1 : end].split(",")) + ")"
            )
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)
