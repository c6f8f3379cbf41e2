"""pytest-tfopt: catch model-optimization regressions in TensorFlow models.

The core (this package minus ``plugin.py``) never imports pytest, and importing it
does not import TensorFlow; both load on first use.
"""

from __future__ import annotations

from .dataset import Dataset
from .errors import (
    BackendUnavailable,
    CacheError,
    ConversionError,
    DatasetError,
    ModelLoadError,
    TfoptError,
    UsageError,
)
from .measure.accuracy import Metric, metric
from .measure.latency import LatencySettings, LatencyStats
from .models import SourceModel, load_model
from .runnable import RunnableModel
from .workbench import Workbench

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable", "CacheError", "ConversionError", "Dataset", "DatasetError", "LatencySettings",
    "LatencyStats", "Metric", "ModelLoadError", "RunnableModel", "SourceModel", "TfoptError", "UsageError",
    "Workbench", "load_model", "metric", "__version__",
]
