"""TensorFlow's start-up lines kept off the command's output.

As it loads, TensorFlow's C++ core writes lines that say nothing about the user's
work: absl's "All log messages before absl::InitializeLog() is called are written to
STDERR", oneDNN's notice and the CPU-feature guard's. TensorFlow 2.21 writes them
before its logging reads `TF_CPP_MIN_LOG_LEVEL`, so that variable does not hide them.
`startup_lines_hidden()` runs the import with file descriptor 2 captured, then passes
on every captured line except native INFO and WARNING log lines (errors, Python
warnings and tracebacks go through). The command uses it unless the user set
`TF_CPP_MIN_LOG_LEVEL` or passed `--verbose`.

This module imports neither Keras nor a backend: it runs before they load.
"""

import contextlib
import os
import re
import sys
import tempfile

# absl's `I0000 00:00:1796149686.039530    6029 port.cc:153] ...` and W lines, the
# pre-initialization notice, and the CPU-feature guard's second line.
_STARTUP_LINE = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.-]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: )"
)


def kept_lines(captured):
    """The lines of `captured` (bytes) that are not native start-up log lines."""
    lines = captured.splitlines(keepends=True)
    return b"".join(line for line in lines if not _STARTUP_LINE.match(line))


@contextlib.contextmanager
def startup_lines_hidden():
    """Runs the block with native start-up log lines on standard error dropped (a
    no-op where standard error is not a file descriptor, as under a notebook)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            rest = kept_lines(capture.read())
            if rest:
                os.write(fd, rest)
