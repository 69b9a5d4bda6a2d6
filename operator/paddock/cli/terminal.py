"""The terminal: colours, a spinner while the agent works, text typed as it arrives, and
y/n prompts.

Colours and the spinner appear only on a terminal (and colours not with `NO_COLOR`), so
piped output is plain text; prompts only when both stdin and stdout are terminals.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import threading
from typing import TextIO

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


class Terminal:
    """Line output with a spinner on the last line, or a line being typed (`write`).
    Thread-safe: the spinner redraws from its own thread while the main thread waits on the
    event stream."""

    def __init__(self, out: TextIO = sys.stdout, stdin: TextIO = sys.stdin) -> None:
        self.out = out
        self.tty = out.isatty()
        self.interactive = self.tty and stdin.isatty()
        self.colour = self.tty and not os.environ.get("NO_COLOR")
        self._stdin = stdin
        self._lock = threading.Lock()
        self._label: str | None = None
        self._drawn = False
        self._typing = False  # a line is written in part: no spinner over it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def width(self) -> int:
        return shutil.get_terminal_size((100, 24)).columns if self.tty else 100

    def style(self, text: str, *styles: str) -> str:
        if not self.colour or not styles:
            return text
        codes = ";".join(_STYLES[style] for style in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def line(self, text: str = "") -> None:
        """A whole line; a line being typed is ended first."""
        with self._lock:
            self._clear()
            self.out.write(("\n" if self._typing else "") + text + "\n")
            self._typing = False
            self.out.flush()

    def write(self, text: str) -> None:
        """Text as it arrives, on the current line; the spinner waits until it ends with a
        newline."""
        if not text:
            return
        with self._lock:
            self._clear()
            self.out.write(text)
            self._typing = not text.endswith("\n")
            self.out.flush()

    def busy(self, label: str | None) -> None:
        """Show the spinner with ``label``; None hides it."""
        with self._lock:
            self._label = label
            if label is None:
                self._clear()
        if label is not None and self.tty and self._thread is None:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()

    def ask(self, question: str) -> bool:
        """A yes/no answer; no is the default."""
        self.busy(None)
        with self._lock:
            self.out.write(("\n" if self._typing else "") + question + " [y/N] ")
            self._typing = False
            self.out.flush()
        answer = self._stdin.readline().strip().lower()
        return answer in ("y", "yes")

    def close(self) -> None:
        self.busy(None)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _clear(self) -> None:
        if self._drawn:
            self.out.write("\r\x1b[2K")
            self._drawn = False

    def _spin(self) -> None:
        for frame in itertools.cycle(_FRAMES):
            if self._stop.wait(0.1):
                return
            with self._lock:
                if self._label is None or self._typing:
                    continue
                self._clear()
                self.out.write(self.style(f"{frame} {self._label}", "cyan"))
                self.out.flush()
                self._drawn = True
