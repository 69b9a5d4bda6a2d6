"""The file tools: read, write, edit, glob and grep, including their refusals and caps."""

from __future__ import annotations

import os
from pathlib import Path

from paddock.sandbox import SandboxClient
from paddock.testing.sandbox import RunningSandbox


async def test_read_numbers_lines_and_honours_view_range(
    client: SandboxClient, space: Path
) -> None:
    (space / "poem.txt").write_text("one\ntwo\r\nthree\nfour\n")
    whole = await client.call("read", {"file_path": str(space / "poem.txt")})
    assert not whole.is_error
    assert whole.text == "     1\tone\n     2\ttwo\n     3\tthree\n     4\tfour"

    middle = await client.call("read", {"file_path": str(space / "poem.txt"), "view_range": [2, 3]})
    assert middle.text == "     2\ttwo\n     3\tthree"
    to_end = await client.call("read", {"file_path": str(space / "poem.txt"), "view_range": [3, 0]})
    assert to_end.text == "     3\tthree\n     4\tfour"
    past_end = await client.call(
        "read", {"file_path": str(space / "poem.txt"), "view_range": [9, -1]}
    )
    assert not past_end.is_error
    assert "has 4 lines" in past_end.text


async def test_read_resolves_relative_paths_against_the_workdir(
    client: SandboxClient, space: Path, sandbox: RunningSandbox
) -> None:
    (space / "rel.txt").write_text("relative\n")
    result = await client.call("read", {"file_path": f"{space.name}/rel.txt"})
    assert result.text == "     1\trelative"
    assert space.parent == sandbox.workdir


async def test_read_refusals(client: SandboxClient, space: Path) -> None:
    (space / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02")
    (space / "empty").write_text("")
    cases = {
        str(space / "missing.txt"): "does not exist",
        str(space): "is a directory",
        str(space / "blob.bin"): "binary file",
    }
    for path, message in cases.items():
        result = await client.call("read", {"file_path": path})
        assert result.is_error, path
        assert message in result.text
    backwards = await client.call("read", {"file_path": str(space / "empty"), "view_range": [5, 2]})
    assert backwards.is_error
    empty = await client.call("read", {"file_path": str(space / "empty")})
    assert (empty.is_error, empty.text) == (False, f"{space / 'empty'} is empty")


async def test_read_is_capped_with_a_notice_that_says_where_to_continue(
    client: SandboxClient, space: Path
) -> None:
    line = "y" * 99
    (space / "big.txt").write_text(f"{line}\n" * 10_000)  # about 1 MB
    result = await client.call("read", {"file_path": str(space / "big.txt")})
    assert not result.is_error
    assert len(result.text.encode()) <= 256 * 1024 + 200
    last = result.text.splitlines()[-1]
    assert last.startswith("[output truncated at 256 KiB after line ")
    shown = int(last.split("after line ")[1].split(";")[0])
    assert f"continue with view_range [{shown + 1}, 0]" in last

    rest = await client.call(
        "read", {"file_path": str(space / "big.txt"), "view_range": [shown + 1, 0]}
    )
    assert rest.text.startswith(f"{shown + 1:>6}\t{line}")

    (space / "wide.txt").write_text("z" * (300 * 1024) + "\nnext\n")
    wide = await client.call("read", {"file_path": str(space / "wide.txt")})
    assert "[... line truncated]" in wide.text


async def test_write_creates_parents_and_overwrites(client: SandboxClient, space: Path) -> None:
    target = space / "deep" / "er" / "file.txt"
    result = await client.call("write", {"file_path": str(target), "content": "héllo\n"})
    assert not result.is_error
    assert result.text == f"wrote 7 bytes to {target}"
    assert target.read_text() == "héllo\n"
    await client.call("write", {"file_path": str(target), "content": "bye"})
    assert target.read_text() == "bye"

    refused = await client.call("write", {"file_path": str(space), "content": "x"})
    assert refused.is_error
    assert "is a directory" in refused.text


async def test_edit_replaces_a_unique_string(client: SandboxClient, space: Path) -> None:
    source = space / "app.py"
    source.write_text("def main():\n    return 1\n")
    result = await client.call(
        "edit",
        {"file_path": str(source), "old_string": "return 1", "new_string": "return 2"},
    )
    assert not result.is_error
    assert result.text == f"edited {source}: 1 replacement"
    assert source.read_text() == "def main():\n    return 2\n"


async def test_edit_refusals_leave_the_file_untouched(client: SandboxClient, space: Path) -> None:
    source = space / "dup.txt"
    source.write_text("a = 1\nb = 1\n")
    cases = [
        ({"old_string": "c = 3", "new_string": "c = 4"}, "was not found"),
        ({"old_string": "= 1", "new_string": "= 2"}, "occurs 2 times"),
        ({"old_string": "= 1", "new_string": "= 1"}, "identical"),
        ({"old_string": "", "new_string": "x"}, "old_string is empty"),
    ]
    for edit, message in cases:
        result = await client.call("edit", {"file_path": str(source), **edit})
        assert result.is_error, edit
        assert message in result.text
    assert source.read_text() == "a = 1\nb = 1\n"

    missing = await client.call(
        "edit", {"file_path": str(space / "nope"), "old_string": "a", "new_string": "b"}
    )
    assert missing.is_error
    assert "does not exist" in missing.text

    every = await client.call(
        "edit",
        {"file_path": str(source), "old_string": "= 1", "new_string": "= 2", "replace_all": True},
    )
    assert every.text == f"edited {source}: 2 replacements"
    assert source.read_text() == "a = 2\nb = 2\n"


async def test_glob_matches_doublestar_patterns_newest_first(
    client: SandboxClient, space: Path
) -> None:
    files = ["a.py", "src/b.py", "src/pkg/c.py", "src/pkg/d.ts", "docs/e.md", ".git/hooks/f.py"]
    for age, name in enumerate(files):
        path = space / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
        os.utime(path, (1_000_000 - age * 10, 1_000_000 - age * 10))

    async def glob(pattern: str, path: str | None = None) -> list[str]:
        result = await client.call("glob", {"pattern": pattern, "path": path or str(space)})
        assert not result.is_error
        return result.text.splitlines()

    assert await glob("**/*.py") == [str(space / n) for n in ("a.py", "src/b.py", "src/pkg/c.py")]
    assert await glob("*.py") == [str(space / "a.py")]
    assert await glob("src/**/*.{py,ts}") == [
        str(space / n) for n in ("src/b.py", "src/pkg/c.py", "src/pkg/d.ts")
    ]
    assert await glob("src/pkg/[cd].*") == [
        str(space / "src/pkg/c.py"),
        str(space / "src/pkg/d.ts"),
    ]
    assert await glob("*.md", str(space / "docs")) == [str(space / "docs/e.md")]
    assert await glob(f"{space}/docs/*") == [str(space / "docs/e.md")]
    none = await client.call("glob", {"pattern": "**/*.rs", "path": str(space)})
    assert (none.is_error, none.text.startswith("no files match")) == (False, True)


async def test_glob_returns_at_most_200_files(client: SandboxClient, space: Path) -> None:
    for i in range(250):
        (space / f"f{i:03}.txt").write_text("")
    result = await client.call("glob", {"pattern": "*.txt", "path": str(space)})
    lines = result.text.splitlines()
    assert len(lines) == 201
    assert lines[-1] == "[showing the 200 newest of 250 matches]"

    missing = await client.call("glob", {"pattern": "*", "path": str(space / "nope")})
    assert missing.is_error


async def test_grep_finds_lines_with_python_regexes(client: SandboxClient, space: Path) -> None:
    (space / "src").mkdir()
    (space / "src" / "a.py").write_text("import os\ndef handler():\n    return os.getcwd()\n")
    (space / "src" / "b.txt").write_text("handler in text\n")
    (space / "blob.bin").write_bytes(b"handler\x00binary")
    (space / ".git").mkdir()
    (space / ".git" / "config").write_text("handler in git\n")
    (space / "long.txt").write_text("handler " + "w" * 5000 + "\n")

    result = await client.call("grep", {"pattern": r"def \w+\(", "path": str(space)})
    assert result.text == f"{space}/src/a.py:2:def handler():"

    everything = await client.call("grep", {"pattern": "handler", "path": str(space)})
    lines = everything.text.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"{space}/long.txt",
        f"{space}/src/a.py",
        f"{space}/src/b.txt",
    ]
    text = lines[0].split(":", 2)[2]
    assert text == "handler " + "w" * (2000 - 8) + " [... line truncated]"

    only_py = await client.call("grep", {"pattern": "handler", "path": str(space), "glob": "*.py"})
    assert only_py.text == f"{space}/src/a.py:2:def handler():"
    one_file = await client.call("grep", {"pattern": "os", "path": str(space / "src" / "a.py")})
    assert one_file.text.splitlines() == [
        f"{space}/src/a.py:1:import os",
        f"{space}/src/a.py:3:    return os.getcwd()",
    ]
    none = await client.call("grep", {"pattern": "absent", "path": str(space)})
    assert (none.is_error, none.text.startswith("no matches")) == (False, True)


async def test_grep_refusals_and_output_cap(client: SandboxClient, space: Path) -> None:
    invalid = await client.call("grep", {"pattern": "(unclosed", "path": str(space)})
    assert invalid.is_error
    assert "invalid regular expression" in invalid.text
    missing = await client.call("grep", {"pattern": "x", "path": str(space / "nope")})
    assert missing.is_error

    (space / "many.txt").write_text("match this line\n" * 20_000)
    capped = await client.call("grep", {"pattern": "match", "path": str(space)})
    assert not capped.is_error
    assert len(capped.text.encode()) <= 100 * 1024 + 200
    assert capped.text.endswith("[output truncated at 100 KiB; narrow the pattern or path]")
