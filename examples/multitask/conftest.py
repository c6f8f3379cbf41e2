"""This directory tests another model than the suite's ini: a multi-task model with named inputs and outputs.

Overriding the two session fixtures is all it takes (paths relative to this file).
"""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def tfopt_model():
    # inputs: ids (3,) int32 feature ids, features (7,) float32; outputs: risk (2 classes), progression (1,)
    return HERE.parent.parent / "models" / "diabetes_multitask.keras"


@pytest.fixture(scope="session")
def tfopt_dataset():
    # .npz keys x_train:ids, x_train:features, y_train:risk, y_train:progression, x_test:..., y_test:...
    return HERE.parent.parent / "fixtures" / "diabetes.npz"
