"""Logging set-up for the server: API keys never reach a log line.

Keys may arrive in query strings (``?api_key=``: EventSource and Twilio callback URLs cannot send
headers), and uvicorn logs request paths with their query; the filter masks the value.
"""

from __future__ import annotations

import logging
import re

_KEY = re.compile(r"(api_key=)[^&\s\"']*")


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(_KEY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _KEY.sub(r"\1***", record.msg)
        return True


def install() -> None:
    """Attach the filter to every handler of the root and uvicorn loggers."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(RedactKeys())
