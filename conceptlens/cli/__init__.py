"""The ``conceptlens`` command line.

Sub-commands: ``score``, ``fit``, ``explain``, ``audit``, ``vocab`` and ``demo``; each has
``--help``. Exit codes: 0 success, 1 error (one line naming the file or argument at fault;
``--debug`` shows the traceback), 2 usage error.
"""

from conceptlens.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
