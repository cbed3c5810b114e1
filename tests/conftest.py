"""Shared fixtures.

Tests that need a dataset file or a C++ compiler call :func:`require_data` / :func:`require_compiler`.
Locally they skip when it is absent. With ``SOFTHEBB_REQUIRE_DATA=1`` (``.ci/run`` sets it) a missing
file or compiler fails the test instead: CI must not pass by skipping the real-data tests.
"""
import os
import shutil
from pathlib import Path

import pytest

from rate_decoder.data import data_dir

STRICT = os.environ.get("SOFTHEBB_REQUIRE_DATA", "") not in ("", "0")


def _missing(message: str):
    if STRICT:
        pytest.fail(f"{message} (SOFTHEBB_REQUIRE_DATA is set: missing data fails the run)", pytrace=False)
    pytest.skip(message)


def require_data(name: str) -> Path:
    """Path of ``name`` (e.g. ``"mnist.npz"``) in ``$SOFTHEBB_DATA``; skip, or fail under CI, when absent."""
    directory = data_dir()
    if directory is None:
        _missing(f"SOFTHEBB_DATA is not set: {name} is needed")
    path = directory / name
    if not path.is_file():
        _missing(f"{name} not found in {directory} (set SOFTHEBB_DATA)")
    return path


def require_compiler() -> None:
    """Brian2's cpp_standalone device needs a C++ compiler; skip, or fail under CI, without one."""
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        _missing("no C++ compiler for Brian2's cpp_standalone device")


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST (``mnist.npz`` in ``$SOFTHEBB_DATA``) as a :class:`rate_decoder.data.Dataset`."""
    from rate_decoder.data import load_npz

    return load_npz(require_data("mnist.npz"))
