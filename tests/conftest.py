import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("SOFTHEBB_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST from $SOFTHEBB_DATA (CI sets it); the tests that need it skip if it is absent."""
    from rate_decoder.data import load_npz

    path = shared_data_dir() / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"real MNIST not found at {path} (set SOFTHEBB_DATA)")
    return load_npz(path)
