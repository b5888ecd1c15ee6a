"""Our log lines: the handler and format, and text from outside made safe for one line.

A task's error message holds what its caller sent and what a remote server answered (an
HTTP body, an SMTP reply); written as is, a newline in it would start a line that looks
like the service's own (log injection), and a terminal escape would act on the reader's
terminal. `one_line` escapes them; multi-line records (tracebacks) are indented after
their first line, so nothing inside one can pass for a record of its own.
"""

from __future__ import annotations

import logging

# C0 controls but tab, DEL, C1 controls, and the Unicode line and paragraph separators,
# each written as its Python escape (\n, \x1b, \u2028...).
_ESCAPES = {
    code: repr(chr(code))[1:-1]
    for code in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)
    if code != 0x09
}


def one_line(text: object) -> str:
    """`text` with every line break and control character escaped."""
    return str(text).translate(_ESCAPES)


class _Formatter(logging.Formatter):
    """Continuation lines (a traceback's) are indented under their record."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\n    ")


def configure_logging(level: str) -> None:
    """Our log lines beside uvicorn's, unless the host application set up logging itself."""
    logger = logging.getLogger("tasks")
    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_Formatter("%(levelname)-9s %(name)s: %(message)s"))
        logger.addHandler(handler)
