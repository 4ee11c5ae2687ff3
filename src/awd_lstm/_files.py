"""Atomic file writes: a reader (or a resumed run) never sees a half-written file."""

import contextlib
import json
import os
import re
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Temporary files are created private (0600); the renamed file gets the permissions
# an ordinary `open(path, "w")` would have given it.
_FILE_MODE = 0o666 & ~_umask()


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model."""


class ModelFileError(ValueError):
    """A model file (`.keras`) that is refused or cannot be loaded; the message is one
    sentence that names it."""


class WriteError(OSError):
    """A file could not be written (full disk, permissions...); the file it was to
    replace is unchanged. The message is one sentence."""

    def __str__(self):
        return self.strerror or super().__str__()


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path beside `path`; when the block succeeds the file is
    flushed to disk and renamed onto `path` (one atomic step), when it fails it is
    removed. `suffix` keeps writers that check extensions (`.weights.h5`) happy."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    except OSError as e:
        raise WriteError(e.errno, f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            reason = e.strerror or str(e)
            raise WriteError(
                e.errno, f"writing {path} failed ({reason}); it is unchanged"
            ) from None
        raise


def write_text_atomic(path, text):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


# A path whose name is not UTF-8 holds lone surrogates (Python's reading of its bytes),
# which UTF-8 cannot encode.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def write_json_atomic(path, data):
    """Writes `data` as JSON to `path` atomically: UTF-8, lone surrogates (the names
    of paths that are not UTF-8) as `\\uXXXX` escapes, which read back the same."""
    text = json.dumps(data, ensure_ascii=False)
    write_text_atomic(path, _LONE_SURROGATE.sub(lambda c: f"\\u{ord(c[0]):04x}", text))


def remove_stale_temporaries(folder):
    """Removes the temporary files a killed process left in `folder`."""
    for name in os.listdir(folder):
        if name.startswith(".tmp-"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
