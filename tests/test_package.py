"""The package's import-time settings."""

import os
import re
import subprocess
import sys

import pytest

PRINT_SETTING = "import os, awd_lstm; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"


def setting_after_import(code, value):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = value
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.parametrize("value, expected", [(None, "1"), ("0", "0"), ("1", "1")])
def test_importing_the_package_turns_on_onednn_unless_the_user_chose(value, expected):
    assert setting_after_import(PRINT_SETTING, value) == expected


def test_onednn_is_left_alone_once_tensorflow_is_imported():
    # TensorFlow reads the variable when it is imported: setting it later would only
    # make the environment lie about the kernels in use.
    code = "import sys; sys.modules.setdefault('tensorflow', sys); " + PRINT_SETTING
    assert setting_after_import(code, None) == "None"


def test_importing_the_package_imports_no_backend():
    code = (
        "import sys, awd_lstm; "
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))"
    )
    assert setting_after_import(code, None) == "[]"


PACKAGE = os.path.join(os.path.dirname(__file__), "..", "src", "awd_lstm")


def _sources(outside_backend=True):
    for folder, _, files in os.walk(PACKAGE):
        if outside_backend and os.path.basename(folder) == "backend":
            continue
        for name in files:
            if name.endswith(".py") and name != "legacy.py":  # legacy: TF1's own API
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, PACKAGE), f.read()


@pytest.mark.parametrize(
    "pattern",
    [
        r"keras\.src",
        r"keras\.(config|backend)\.backend\(\)",
        r"\._(track_variable|tracker|flatten_metrics_in_order|maybe_symbolic_build)\b",
        r"\._(backend_apply_gradients|all_reduce_sum_gradients|model_variables_moving_average)",
        r"torch\._VF",
    ],
)
def test_backend_code_and_keras_internals_live_in_the_backend_package(pattern):
    import re

    found = [path for path, text in _sources() if re.search(pattern, text)]
    assert found == [], f"{pattern} outside awd_lstm/backend: {found}"


def test_every_private_keras_use_says_why():
    with open(os.path.join(PACKAGE, "backend", "_keras.py"), encoding="utf-8") as f:
        text = f.read()
    doc, body = text.split('"""', 2)[1], text.split('"""', 2)[2]
    for function in ("fused_lstm", "backend_rnn", "training_of_current_call", "track_variable"):
        assert f"def {function}(" in body
    # Every item numbered once, in order, and every function says which it is.
    numbers = [int(line.split(".")[0]) for line in doc.splitlines() if line[:1].isdigit()]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) == 13
    cited = {int(n) for n in re.findall(r'"""(\d+)\. ', body)}
    assert cited == set(numbers)
