"""Seeds of a model's and a run's random streams, split from one seed.

Every stream (a layer's dropout masks, its initializer, an epoch's segment lengths) is
named, and its seed is the child of the run seed's `numpy.random.SeedSequence` with
that name as spawn key. Streams of different names, different layers and different
run seeds do not collide, as fixed offsets (`seed + 1`, `seed + 10 + layer`) would:
there, run seed 141's second stream is run seed 142's first.

Example:

>>> derived_seed(141, "lstm", 0, "weight_dropout") == derived_seed(141, "lstm", 1, "weight_dropout")
False
>>> derived_seed(None, "anything") is None
True
"""

import zlib

import numpy as np


def derived_seed(seed, *names):
    """The integer seed (31 bits) of the stream `names` of `seed`; None stays None."""
    if seed is None:
        return None
    # Names as integers, stably across processes (Python's str hash is salted).
    key = tuple(n if isinstance(n, int) else zlib.crc32(str(n).encode()) for n in names)
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1)[0] >> 1)
