"""One writer per run folder: an exclusive lock that the operating system drops when
its process ends.

A process that writes to a run folder holds an exclusive lock on the file `RUN/.lock`
(`fcntl.flock`; `msvcrt.locking` where there is no `fcntl`) and writes in it who it
is: process id, host, command line and start time. Another process that would write
there is refused with one sentence naming it (`RunInUseError`). The kernel releases a
lock when its process ends in any way, SIGKILL included, so a lock file left behind by
a killed process holds no lock: the next writer takes it over. The lock is
re-entrant within a process: the command takes it before anything is written and the
library's `train` takes it again.

A refused process changes nothing: the lock file is opened without being truncated,
and its record is written only once the lock is held. The holder removes the file,
while it still holds the lock, when it is done; a process that opened the file just
before checks, once it holds the lock, that the file is still the folder's, and
otherwise tries again with the new one.

Not `filelock`: its `flock` lock file stays empty (no record of the holder to name),
and it is not a dependency of this package.
"""

import contextlib
import datetime
import errno
import json
import os
import shlex
import socket
import sys
import threading
import time

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

LOCK = ".lock"
# What a failing flock says where the file system keeps no locks (NFS without a lock
# daemon, some FUSE file systems): the folder is used unlocked, with a warning.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}
# Windows' locks are mandatory: the one locked byte lies past the record, which others
# must read.
_WINDOWS_BYTE = 1 << 30
# A refused process reads the record again while the holder may be writing it.
_RECORD_READS, _RECORD_WAIT = 20, 0.05

_guard = threading.Lock()
_held = {}  # real path of a folder -> its FolderLock, held by this process


class RunInUseError(RuntimeError):
    """Another process writes to the run folder; the message is one sentence naming it."""


class FolderLock:
    """The lock of one folder, held by this process (shared by re-entrant uses).

    Attributes:
        path: The folder, as the outermost user named it.
        made: Whether taking the lock made the folder.
    """

    def __init__(self, path, fd, made_folders):
        self.path = path
        self.made = bool(made_folders)
        self._fd = fd
        self._made_folders = made_folders  # deepest first
        self._depth = 0

    def _release(self):
        if self._fd is not None:
            # Removed while still held: a process that opened it meanwhile sees, once it
            # holds the lock, that the file is no longer the folder's.
            try:
                os.unlink(os.path.join(self.path, LOCK))
            except OSError:  # Windows keeps open files; no record of an ended process
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)
        for folder in self._made_folders:  # those left empty: nothing was written
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        if self._fd is not None:
            os.close(self._fd)  # the kernel's lock goes with it


@contextlib.contextmanager
def folder_lock(path, make=False, log=None):
    """Holds the lock of the folder `path` while the block runs; yields its
    `FolderLock`.

    Args:
        path: The folder.
        make: Make the folder (and its missing parents) first; those of them still
            empty at the end are removed again.
        log: Called with a line when the lock of a process that ended is taken over
            or the file system keeps no locks (None: a warning).

    Raises:
        RunInUseError: Another process holds it; nothing was changed.
        OSError: The folder cannot be made, or the lock file cannot be written there
            (`FileNotFoundError`: the folder does not exist and `make` is false).
    """
    path = os.fspath(path)
    made_folders = _make_folders(path) if make else []
    key = os.path.realpath(path)
    with _guard:
        lock = _held.get(key)
        if lock is None:
            try:
                lock = _acquire(path, made_folders, log)
            except BaseException:
                for folder in made_folders:
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)
                raise
            _held[key] = lock
        lock._depth += 1
    try:
        yield lock
    finally:
        with _guard:
            lock._depth -= 1
            if lock._depth == 0:
                del _held[key]
                lock._release()


def check_not_in_use(path):
    """Raises `RunInUseError` if another process holds the lock of the folder `path`;
    writes nothing and holds nothing once it returns (for a process that only reads
    the folder: it takes a shared lock and drops it at once)."""
    path = os.fspath(path)
    if os.path.realpath(path) in _held:
        return
    try:
        fd = os.open(os.path.join(path, LOCK), os.O_RDONLY)
    except OSError:  # no lock file: no writer (a writer makes it first)
        return
    try:
        if not _try_lock(fd, shared=True):
            raise RunInUseError(_in_use(path, _read_record(fd, wait=True)))
    finally:
        os.close(fd)


def _make_folders(path):
    """Makes the folder `path` and its missing parents; returns those it made, the
    deepest first."""
    missing = []
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    made = []
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:  # another process made it meanwhile
            continue
        made.append(folder)
    return made[::-1]


def _acquire(path, made_folders, log):
    lock_file = os.path.join(path, LOCK)
    while True:
        # Not truncated: a refused process leaves the holder's record as it is.
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if not _try_lock(fd):
                raise RunInUseError(_in_use(path, _read_record(fd, wait=True)))
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(lock_file))
            except FileNotFoundError:
                current = False
        except OSError as e:
            empty = e.errno in _NO_LOCKS and os.fstat(fd).st_size == 0
            os.close(fd)
            if e.errno not in _NO_LOCKS:
                raise
            if empty:  # the lock file this made: it means nothing here
                with contextlib.suppress(OSError):
                    os.unlink(lock_file)
            _report(
                log,
                f"{path} cannot be locked ({e.strerror}): this file system keeps no "
                "locks, so another process could write to it at the same time",
            )
            return FolderLock(path, None, made_folders)
        except BaseException:
            os.close(fd)
            raise
        if current:
            break
        os.close(fd)  # its holder removed it meanwhile: lock the folder's new one
    left = _read_record(fd)
    if left is not None:
        _report(
            log,
            f"{path} was left locked by process {left['pid']} ({left['command']}) on host "
            f"{left['host']}, which no longer holds it; taken over",
        )
    _write_record(fd)
    return FolderLock(path, fd, made_folders)


def _try_lock(fd, shared=False):
    """Takes the lock of the open lock file `fd` without waiting; False where another
    process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as e:
            # Some file systems say EACCES where the lock is taken.
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                return False
            raise
        return True
    os.lseek(fd, _WINDOWS_BYTE, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EDEADLOCK):
            return False
        raise
    return True


def _write_record(fd):
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": _command_line(),
        "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    data = json.dumps(record).encode("utf-8")
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.ftruncate(fd, len(data))


def _read_record(fd, wait=False):
    """The holder's record in the lock file `fd` (its fields as one-line text), or
    None where there is none; with `wait`, read again for a while until there is one
    (the holder writes it right after taking the lock)."""
    for attempt in range(_RECORD_READS if wait else 1):
        if attempt:
            time.sleep(_RECORD_WAIT)
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            record = json.loads(os.read(fd, 1 << 16).decode("utf-8"))
        except ValueError:
            continue
        if isinstance(record, dict) and {"pid", "host", "command", "since"} <= set(record):
            return {key: " ".join(str(value).split()) for key, value in record.items()}
    return None


def _in_use(path, record):
    """The refusal's sentence."""
    advice = "wait for it to end, or use another folder"
    if record is None:
        return f"{path} is in use by another process (its {LOCK} names none); {advice}"
    since = record["since"]
    with contextlib.suppress(ValueError):  # in this machine's time zone
        since = datetime.datetime.fromisoformat(since).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"{path} is in use by process {record['pid']} ({record['command']}) on host "
        f"{record['host']} since {since}; {advice}"
    )


def _command_line(limit=160):
    """This process's command line, as a person would type it (`awd-lstm train ...`,
    `python -m awd_lstm ...`), shortened to `limit` characters."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    argv = sys.argv or [""]
    if spec is not None and spec.name:  # python -m NAME
        program = ["python", "-m", spec.name.removesuffix(".__main__")]
    elif argv[0] in ("", "-c"):  # python -c CODE, or an interactive Python
        program = ["python", argv[0]] if argv[0] else ["python"]
    else:
        program = [os.path.basename(argv[0])]
    command = shlex.join([*program, *argv[1:]])
    return command if len(command) <= limit else command[: limit - 3] + "..."


def _report(log, line):
    if log is not None:
        log(line)
        return
    import warnings

    warnings.warn(line, stacklevel=5)


def _forget_inherited():
    """In a forked child: the parent's locks are the parent's (closing the inherited
    descriptors leaves them held)."""
    for lock in _held.values():
        if lock._fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock._fd)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited)
