"""The kill-and-resume loop of `scripts/kill_resume.py`, short: SIGKILLs at random
moments and while a file is being written, a check of the run folder after each, then
a resume to the uninterrupted run's exact end.

Its `awd-lstm train` processes run on one backend per day in turn (with that day's
seed for the kill moments), so that CI covers the three over three days at the cost
of one; `AWD_LSTM_KILL_RESUME_BACKENDS=tensorflow,jax,torch` runs any list of them.
The test itself runs once, in the TensorFlow test process (its subprocesses choose
their own backend)."""

import datetime
import importlib.util
import os

import keras
import pytest

BACKENDS = ("tensorflow", "jax", "torch")
SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "kill_resume.py")


def _today():
    day = datetime.date.today().toordinal()
    chosen = os.environ.get("AWD_LSTM_KILL_RESUME_BACKENDS")
    return (chosen.split(",") if chosen else [BACKENDS[day % len(BACKENDS)]]), day


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="once per suite; the runs pick their backend"
)
@pytest.mark.parametrize("backend", _today()[0])
def test_runs_killed_at_random_and_while_writing_resume_to_the_same_end(backend, tmp_path):
    spec = importlib.util.spec_from_file_location("kill_resume", SCRIPT)
    kill_resume = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kill_resume)
    seed = _today()[1]
    # Kills 1 and 2 at random moments, kill 3 while a file is being written.
    arguments = ["--backend", backend, "--kills", "3", "--seed", str(seed)]
    print(f"python scripts/kill_resume.py {' '.join(arguments)}")  # to run it again
    assert kill_resume.main([*arguments, "--work", str(tmp_path)]) == 0
