"""TensorBoard events and the learning-curve PNG of a run folder."""

import pytest

from awd_lstm.run_logs import EVENTS_FILE, crc32c, plot_learning_curves, write_tensorboard

RECORDS = [
    {
        "epoch": e,
        "train_loss": 5.0 - e / 2,
        "val_loss": 5.1 - e / 2,
        "train_ppl": 100.0 / e,
        "val_ppl": 110.0 / e,
        "lr": 30.0,
        "averaging": e > 2,
        "tokens_per_sec": 1000.0 + e,
        "seconds": 10.0,
    }
    for e in (1, 2, 3)
]


def test_crc32c_check_values():
    # The standard check value of CRC-32C, and RFC 3720's 32 zero bytes.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA


def test_tensorboard_events_read_back_with_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    write_tensorboard(tmp_path, RECORDS, start_time=1000.0)
    # TFRecordDataset checks both masked CRCs of every record.
    events = [
        tf.compat.v1.Event.FromString(raw.numpy())
        for raw in tf.data.TFRecordDataset(str(tmp_path / EVENTS_FILE))
    ]
    assert events[0].file_version == "brain.Event:2"
    scalars = {}
    for event in events[1:]:
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    assert scalars["perplexity/valid"] == [(1, 110.0), (2, 55.0), (3, pytest.approx(110 / 3))]
    assert [step for step, _ in scalars["learning_rate"]] == [1, 2, 3]
    assert events[-1].wall_time == 1030.0
    # Rewritten whole: writing again (as a resumed run does) holds each epoch once.
    write_tensorboard(tmp_path, RECORDS[:2], start_time=1000.0)
    assert len(list(tf.data.TFRecordDataset(str(tmp_path / EVENTS_FILE)))) == 3


def test_learning_curves_png(tmp_path):
    path = tmp_path / "curves.png"
    plot_learning_curves(path, RECORDS, "a run")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_progress_in_a_file_is_plain_lines(capsys):
    import io

    from awd_lstm.progress import Progress

    log = io.StringIO()  # not a terminal
    progress = Progress(1000, "token", stream=log, stateful_metrics=["loss"])
    for done in range(0, 1001, 50):
        progress.update(done, [("loss", 4.25)])
    lines = log.getvalue().splitlines()
    assert len(lines) == 10  # every 10%, the last at the end
    assert lines[0].startswith(" 10% 100/1,000 tokens, loss 4.25, ")
    assert lines[-1].startswith("100% 1,000/1,000 tokens")
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    quiet = io.StringIO()
    Progress(10, enabled=False, stream=quiet).update(10)
    assert quiet.getvalue() == "" and capsys.readouterr().out == ""
