"""`awd-lstm data download`: against a local HTTP server with small fake corpora (no test
touches the internet)."""

import hashlib
import http.server
import io
import os
import re
import socket
import subprocess
import sys
import threading
import zipfile

import pytest

from awd_lstm.cli import main
from awd_lstm.data import download as dl
from awd_lstm.data import load_corpus, read_tokens
from tests.conftest import one_error_line as shared_one_error_line

PTB = {
    "ptb.train.txt": b" the cat sat on the mat \n a dog <unk> the cat \n the N cats \n",
    "ptb.valid.txt": b" the dog sat \n a cat \n",
    "ptb.test.txt": b" the mat \n a dog sat on a cat \n",
}
WIKI = {
    "wiki.train.tokens": b" \n = Title = \n \n The cat sat , the dog <unk> . \n",
    "wiki.valid.tokens": b" \n = Other = \n The dog sat . \n",
    "wiki.test.tokens": b" \n The cat . \n",
}
# 40 bytes of training text, then 2 x 8 held out (ENWIK8_HELD_OUT is patched to 8).
ENWIK8 = b"<page>\n  <title>A</title>\n\n  caf\xc3\xa9 ok\n" + b"text\r\nmore" + b"\n<end>\n!"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def zipped(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


WIKITEXT_ZIP = zipped({f"wikitext-2/{name}": data for name, data in WIKI.items()})
ENWIK8_ZIP = zipped({"enwik8": ENWIK8})


class Handler(http.server.BaseHTTPRequestHandler):
    """GET of the server's files with `Range: bytes=N-` (206, or 416 past the end),
    unless the server ignores ranges; a path in `cut` sends only that many bytes of
    its body (once), under the full Content-Length, then closes the connection."""

    def do_GET(self):
        state = self.server
        asked = self.headers.get("Range")
        state.requests.append((self.path, asked))
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if asked and not state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        cut = state.cut.pop(self.path, None)
        self.wfile.write(payload if cut is None else payload[:cut])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.requests, httpd.cut, httpd.ignore_range = {}, [], {}, False
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    monkeypatch.delenv(dl.MIRROR_VARIABLE, raising=False)


def one_error_line(capsys):
    return shared_one_error_line(capsys, "^awd-lstm data: error: ")


def test_ptb_from_a_mirror_folder_is_the_layout_load_corpus_reads(server, tmp_path, capsys):
    server.files = {f"/mirror/{name}": data for name, data in PTB.items()}
    out = tmp_path / "ptb"
    hashes = [sha256(PTB[name]) for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")]
    argv = ["data", "download", "ptb", "--dir", str(out), "--url", server.base + "mirror/"]
    assert main([*argv, "--sha256", *hashes]) == 0
    printed = capsys.readouterr().out
    assert f"next: awd-lstm train --data {out} --preset ptb\n" in printed
    assert sorted(os.listdir(out)) == sorted(PTB)
    corpus = load_corpus(out)
    assert corpus.vocab.level == "word" and len(corpus.train) == 17
    assert [path for path, _ in server.requests] == [f"/mirror/{name}" for name in PTB]


def test_wikitext_archive_is_unpacked_and_removed(server, tmp_path, monkeypatch, capsys):
    server.files = {"/wt2.zip": WIKITEXT_ZIP}
    result = dl.download_corpus(
        "wikitext-2", tmp_path / "wt2", server.base + "wt2.zip", sha256(WIKITEXT_ZIP), progress=True
    )
    assert result.downloaded
    assert sorted(os.listdir(tmp_path / "wt2")) == sorted(WIKI)  # no archive, no .part
    for name, data in WIKI.items():
        assert (tmp_path / "wt2" / name).read_bytes() == data
    assert load_corpus(tmp_path / "wt2").vocab.level == "word"
    assert result.train_command.endswith("--preset wikitext-2")
    assert f"100% {len(WIKITEXT_ZIP):,}/{len(WIKITEXT_ZIP):,} bytes" in capsys.readouterr().out


def expected_tokens(part):
    # prep_enwik8.py's output read at word level: each byte's value, <eos> per line.
    lines = part.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [token for line in lines for token in [str(b) for b in line] + ["<eos>"]]


def test_enwik8_is_split_as_the_reference_prepares_it(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dl, "ENWIK8_HELD_OUT", 8)
    server.files = {"/enwik8.zip": ENWIK8_ZIP}
    out = tmp_path / "enwik8"
    argv = ["data", "download", "enwik8", "--dir", str(out), "--url", server.base]
    assert main([*argv, "--sha256", sha256(ENWIK8_ZIP)]) == 0
    assert "--preset enwik8 --level word" in capsys.readouterr().out
    parts = {"train": ENWIK8[:-16], "valid": ENWIK8[-16:-8], "test": ENWIK8[-8:]}
    for split, part in parts.items():
        assert read_tokens(out / f"{split}.txt") == expected_tokens(part)
    assert sorted(os.listdir(out)) == ["test.txt", "train.txt", "valid.txt"]
    assert len(load_corpus(out).train) == len(expected_tokens(parts["train"]))


def test_bad_checksum_is_one_sentence_and_leaves_no_files(server, tmp_path, capsys):
    server.files = {"/wt2.zip": WIKITEXT_ZIP}
    out = tmp_path / "wt2"
    argv = ["data", "download", "wikitext-2", "--dir", str(out), "--url", server.base + "wt2.zip"]
    assert main([*argv, "--sha256", "0" * 64]) == 1
    err = one_error_line(capsys)
    assert f"gave a file with sha256 {sha256(WIKITEXT_ZIP)}, not the expected" in err
    assert os.listdir(out) == []


def test_a_mirror_keeps_the_published_checksum(server, tmp_path, monkeypatch, capsys):
    server.files = {"/corpora/wikitext-2-v1.zip": WIKITEXT_ZIP}  # not the real archive
    monkeypatch.setenv(dl.MIRROR_VARIABLE, server.base + "corpora")
    assert main(["data", "download", "wikitext-2", "--dir", str(tmp_path / "wt2")]) == 1
    published = dl.SOURCES["wikitext-2"].files[0].sha256
    assert f"not the published {published}" in one_error_line(capsys)
    assert server.requests == [("/corpora/wikitext-2-v1.zip", None)]
    assert os.listdir(tmp_path / "wt2") == []


def test_truncated_download_resumes_with_a_range_request(server, tmp_path):
    server.files = {"/wt2.zip": WIKITEXT_ZIP}
    server.cut["/wt2.zip"] = 100
    args = ("wikitext-2", tmp_path, server.base + "wt2.zip", sha256(WIKITEXT_ZIP))
    with pytest.raises(dl.DownloadError) as caught:
        dl.download_corpus(*args)
    message = str(caught.value)
    assert f"stopped after 100 of {len(WIKITEXT_ZIP):,} bytes" in message
    assert "run the command again to resume it" in message
    assert os.listdir(tmp_path) == ["wikitext-2-v1.zip.part"]  # nothing looks complete
    assert dl.download_corpus(*args).downloaded
    assert server.requests[-1] == ("/wt2.zip", "bytes=100-")
    assert sorted(os.listdir(tmp_path)) == sorted(WIKI)
    assert (tmp_path / "wiki.train.tokens").read_bytes() == WIKI["wiki.train.tokens"]


def test_a_server_ignoring_the_range_starts_over(server, tmp_path):
    server.files = {"/wt2.zip": WIKITEXT_ZIP}
    server.ignore_range = True
    (tmp_path / "wikitext-2-v1.zip.part").write_bytes(b"not the start of the file")
    lines = []
    dl.download_corpus(
        "wikitext-2", tmp_path, server.base + "wt2.zip", sha256(WIKITEXT_ZIP), log=lines.append
    )
    assert server.requests == [("/wt2.zip", "bytes=25-")]
    assert "does not resume downloads; downloading it from the start" in lines[0]
    assert sorted(os.listdir(tmp_path)) == sorted(WIKI)


def test_a_whole_part_is_checked_not_fetched_again(server, tmp_path):
    server.files = {"/wt2.zip": WIKITEXT_ZIP}
    (tmp_path / "wikitext-2-v1.zip.part").write_bytes(WIKITEXT_ZIP)
    dl.download_corpus("wikitext-2", tmp_path, server.base + "wt2.zip", sha256(WIKITEXT_ZIP))
    assert server.requests == [("/wt2.zip", f"bytes={len(WIKITEXT_ZIP)}-")]  # answered 416
    assert sorted(os.listdir(tmp_path)) == sorted(WIKI)


def test_a_folder_holding_the_corpus_is_left_alone(server, tmp_path, capsys):
    for name, data in WIKI.items():
        (tmp_path / name).write_bytes(data)
    assert main(["data", "download", "wikitext-103", "--dir", str(tmp_path)]) == 0
    assert "wikitext-103 is already in" in capsys.readouterr().out
    assert server.requests == []


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_host_is_one_sentence_and_exit_1(tmp_path, capsys):
    url = f"http://127.0.0.1:{closed_port()}/"
    assert main(["data", "download", "ptb", "--dir", str(tmp_path / "ptb"), "--url", url]) == 1
    err = one_error_line(capsys)
    assert f"cannot reach {url}ptb.train.txt (" in err and "give a mirror with --url" in err
    assert os.listdir(tmp_path / "ptb") == []


def test_http_error_is_one_sentence_and_exit_1(server, tmp_path, capsys):
    url = server.base + "gone.zip"
    assert main(["data", "download", "enwik8", "--dir", str(tmp_path), "--url", url]) == 1
    assert f"{url} answered HTTP 404 Not Found" in one_error_line(capsys)
    assert os.listdir(tmp_path) == []


def test_an_archive_that_is_not_a_zip_is_one_sentence(server, tmp_path, capsys):
    server.files = {"/enwik8.zip": b"<html>not a zip</html>"}
    argv = ["data", "download", "enwik8", "--dir", str(tmp_path), "--url", server.base]
    assert main([*argv, "--sha256", sha256(b"<html>not a zip</html>")]) == 1
    assert "is not a readable zip archive" in one_error_line(capsys)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".txt")]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["ptb", "--url", "http://example.org/ptb.tgz"], "--url must be a folder ending in /"),
        (["ptb", "--sha256", "0" * 64], "--sha256 must give 3 checksums for ptb"),
        (["enwik8", "--sha256", "xyz"], "--sha256 must be 64 hexadecimal digits; got xyz"),
        (["enwik8", "--url", "ftp://example.org/"], "--url must be an http, https or file URL"),
    ],
)
def test_bad_arguments_are_usage_errors(flags, message, tmp_path, capsys):
    assert main(["data", "download", *flags, "--dir", str(tmp_path / "d")]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "d").exists()


def test_a_folder_with_another_corpus_read_first_is_refused(tmp_path, capsys):
    (tmp_path / "ptb.train.txt.xz").write_bytes(b"")
    assert main(["data", "download", "wikitext-2", "--dir", str(tmp_path)]) == 2
    assert "holds ptb.train.txt.xz, which awd-lstm train --data reads" in one_error_line(capsys)


def test_the_module_does_not_import_keras():
    code = "import sys, awd_lstm.data.download; print('keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
