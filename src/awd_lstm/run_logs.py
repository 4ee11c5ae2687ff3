"""What a run folder shows a person: TensorBoard scalars and a PNG of the learning curves.

Both are rewritten whole from the epoch records after every epoch (atomically), so a
resumed run's files hold each epoch once. The TensorBoard event file is written by this
module (TFRecord framing with masked CRC-32C around `Event` protocol buffers holding
`simple_value` summaries), so it needs neither TensorFlow nor TensorBoard installed;
`tensorboard --logdir RUN/tensorboard` reads it.
"""

import math
import os
import struct

from awd_lstm._files import atomic_path

EVENTS_FILE = "events.out.tfevents.0.awd-lstm"

# The scalars of an epoch record shown in TensorBoard, by tag.
SCALARS = {
    "loss/train": "train_loss",
    "loss/valid": "val_loss",
    "perplexity/train": "train_ppl",
    "perplexity/valid": "val_ppl",
    "learning_rate": "lr",
    "tokens_per_sec": "tokens_per_sec",
}


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli), the checksum of TFRecord files."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value):
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _bytes_field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time, step=0, file_version=None, scalars=()):
    # Event: wall_time = 1 (double), step = 2 (int64), file_version = 3, summary = 5.
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time)
    if step:
        out += _varint(2 << 3) + _varint(step)
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        # Summary.value = 1; Value.tag = 1, Value.simple_value = 2 (float).
        values = b"".join(
            _bytes_field(
                1,
                _bytes_field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value),
            )
            for tag, value in scalars
        )
        out += _bytes_field(5, values)
    return out


def _record(data):
    length = struct.pack("<Q", len(data))
    checksums = struct.pack("<I", _masked_crc(length)), struct.pack("<I", _masked_crc(data))
    return length + checksums[0] + data + checksums[1]


def write_tensorboard(folder, records, start_time):
    """Writes `records` (epoch dicts with the keys of `SCALARS`) as one TensorBoard
    event file in `folder`, one step per epoch."""
    os.makedirs(folder, exist_ok=True)
    chunks = [_record(_event(start_time, file_version="brain.Event:2"))]
    elapsed = 0.0
    for record in records:
        elapsed += record.get("seconds", 0.0)
        scalars = [
            (tag, float(record[key]))
            for tag, key in SCALARS.items()
            if key in record and math.isfinite(record[key])
        ]
        chunks.append(_record(_event(start_time + elapsed, record["epoch"], scalars=scalars)))
    with atomic_path(os.path.join(folder, EVENTS_FILE)) as tmp, open(tmp, "wb") as f:
        f.write(b"".join(chunks))


def plot_learning_curves(path, records, title=""):
    """A PNG of training and validation perplexity per epoch (log scale), with the
    epoch where NT-ASGD started averaging marked."""
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in records]
    figure = Figure(figsize=(7, 4.2), dpi=100)
    axes = figure.add_subplot()
    axes.plot(epochs, [r["train_ppl"] for r in records], "o-", ms=3, label="train")
    axes.plot(epochs, [r["val_ppl"] for r in records], "o-", ms=3, label="validation")
    switched = [r["epoch"] for r in records if r.get("averaging")]
    if switched and switched[0] > epochs[0]:
        axes.axvline(switched[0] - 0.5, color="gray", ls="--", lw=1, label="averaging on")
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("perplexity")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
