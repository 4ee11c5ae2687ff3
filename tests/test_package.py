"""The package's import-time settings."""

import os
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
