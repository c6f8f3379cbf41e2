"""The core entry point: a source model + a data set → runnable variants on backends.

Usable without pytest::

    from pytest_tfopt import Workbench
    wb = Workbench("models/digits_cnn.h5", "fixtures/digits.npz")
    int8 = wb.runnable("int8")
    print(int8.evaluate(), int8.latency().p95_ms, int8.size_bytes)
"""

from __future__ import annotations

import functools
import logging
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from . import progress, tfenv
from .artifact import Artifact
from .backends import Backend, BackendRegistry
from .backends import default_registry as default_backends
from .cache import cache_key
from .dataset import Dataset
from .errors import BackendUnavailable, DatasetError, ModelLoadError
from .measure.latency import LatencySettings
from .measure.reuse import MeasurementStore
from .models import DEFAULT_SIGNATURE, SourceModel, identity, load_model
from .models.keras import from_keras
from .remote_cache import open_cache
from .runnable import RunnableModel
from .security import user_cache_dir
from .variants import Plan, VariantRegistry
from .variants import default_registry as default_variants
from .variants.training import as_tf_keras

DEFAULT_CALIBRATION_SIZE = 200
_logger = logging.getLogger("pytest_tfopt")


class Workbench:
    """Builds (through the cache), loads and memoizes variants of one source model.

    ``model``: path or Keras model; ``dataset``: :class:`Dataset`, ``.npz`` path,
    ``tf.data.Dataset`` or ``(x, y)``. ``threads``: runtime threads (default: the
    cores of this process, shared among xdist workers). ``signature``: the SavedModel /
    ``.tflite`` signature to test. ``trust_shared``: ``cache_dir`` is a deliberately shared team cache (see
    docs/security.md); otherwise it must be private to this user. ``reuse``: keep measurements that cannot
    change (outputs, accuracy, gzip size, memory) as cache records and read them back in later runs
    (:mod:`pytest_tfopt.measure.reuse`); ``remeasure``: read none of them back (still write them).
    ``log``: where build progress goes: a ``str -> None`` callable (a line per build, stage and epoch) or a
    progress sink, an object with ``event(ev)`` (:mod:`pytest_tfopt.progress`).
    """

    def __init__(self, model: Any, dataset: Any = None, *, cache_dir: str | os.PathLike | None = None,
                 threads: int | None = None, rebuild: bool = False,
                 calibration_size: int = DEFAULT_CALIBRATION_SIZE,
                 variants: VariantRegistry | None = None, backends: BackendRegistry | None = None,
                 latency: LatencySettings | None = None, log: Callable[[str], None] | None = None,
                 signature: str = DEFAULT_SIGNATURE, trust_shared: bool = False, reuse: bool = False,
                 remeasure: bool = False) -> None:
        self._model_arg = model
        self.signature_key = signature
        self._dataset_arg = dataset
        # the default is per user (~/.cache/pytest-tfopt/artifacts), never a shared temp directory
        self.cache = open_cache(cache_dir or user_cache_dir("artifacts"), rebuild, trust_shared=trust_shared)
        self.threads = threads or tfenv.default_threads()
        self.calibration_size = calibration_size
        self.variants = variants or default_variants()
        self.backends = backends or default_backends()
        self.latency_settings = latency or LatencySettings()
        self.log = log or _logger.info
        self._source: SourceModel | None = None
        self._identity: SourceModel | None = None
        self._record: str | None = None  # the cache record of the model file's identity (a path's only)
        self._dataset: Dataset | None = None
        self._runnables: dict[tuple[str, str], RunnableModel] = {}
        #: where measurements that cannot change are kept (``None``: measured every time)
        self.measurement_store = MeasurementStore(self.cache, remeasure) if reuse else None

    # ---- inputs -----------------------------------------------------------
    @property
    def source(self) -> SourceModel:
        if self._source is None:
            if self._model_arg is None:
                raise ModelLoadError("no model configured: set ini tfopt_model or override the tfopt_model fixture")
            self._source = load_model(self._model_arg, self.signature_key, self._data_dtypes())
        return self._source

    @property
    def identity(self) -> SourceModel:
        """The source model's name, hash and signature — what cache keys and input checks need — read from the
        cache's record of the model file when it has one, so a run whose artifacts are all cached never loads
        the model (nor imports TensorFlow). Its ``model`` is ``None`` then: use :attr:`source` to build."""
        if self._source is not None:
            return self._source
        if self._identity is None and self._record_name() is not None:
            doc = self.cache.read_record(self._record)
            try:
                self._identity = None if doc is None else identity.from_record(doc, os.fspath(self._model_arg))
            except ValueError:
                warnings.warn(f"pytest-tfopt: cache record {self._record} is damaged; loading the model", stacklevel=2)
        return self._identity if self._identity is not None else self.source

    def _record_name(self) -> str | None:
        """The cache record of a model given as a path (``None`` for in-memory models and unreadable paths)."""
        if self._record is None and isinstance(self._model_arg, (str, os.PathLike)):
            fingerprint = identity.file_fingerprint(os.fspath(self._model_arg))
            if fingerprint is not None:
                self._record = identity.record_name(fingerprint, self.signature_key)
        return self._record

    def _data_dtypes(self) -> dict[Any, str]:
        """Input dtypes of the data by name (``None`` for one array): integer data is int32, else float32.

        Only a subclassed Keras model, whose traced call knows shapes but not dtypes, uses them.
        """
        if self._dataset_arg is None or not _is_keras_model(self._model_arg):
            return {}
        x = self.dataset.x
        items = x.items() if isinstance(x, dict) else [(None, x)]
        return {k: "int32" if np.issubdtype(v.dtype, np.integer) else "float32" for k, v in items}

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            if self._dataset_arg is None:
                raise DatasetError("no data set configured: set ini tfopt_dataset or override the tfopt_dataset fixture")
            self._dataset = Dataset.coerce(self._dataset_arg)
        return self._dataset

    def calibration(self, size: int | None = None) -> Dataset:
        """Seeded calibration samples from the training split."""
        return self.dataset.calibration(size or self.calibration_size)

    @property
    def eval_dataset(self) -> Dataset:
        """The evaluation split (the data set's ``test`` split): what the ``eval_dataset`` fixture hands out and
        every :class:`RunnableModel` of this workbench evaluates on."""
        return self.dataset.test

    @property
    def evaluation(self) -> Dataset:
        """The old name of :attr:`eval_dataset` (kept for compatibility)."""
        return self.eval_dataset

    # ---- variants ----------------------------------------------------------
    def backend(self, name: str) -> Backend:
        """The backend ``name``; raises :class:`BackendUnavailable` with the reason when it cannot run here."""
        backend = self.backends.get(name)
        reason = backend.unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        return backend

    def build(self, variant: str, backend: str = "tflite") -> Artifact:
        """The artifact of ``variant`` for ``backend``, from the cache or built now."""
        plan = self.variants.resolve(variant)
        be = self.backend(backend)
        source = self.identity  # the model itself is loaded only if the artifact must be built
        spec, recipe = plan.precision
        params = plan.precision_params()
        refused = be.unsupported_reason(recipe.name, params)
        if refused:  # before calibration, fine-tunes or conversions: nothing to waste
            raise BackendUnavailable(refused)
        calibration = None
        if plan.needs_calibration:
            calibration = self.calibration(params.get("calibration_size"))
            calibration.check_finite(f"calibration data ({calibration.name})")
            source.check_inputs(calibration.x, "calibration data")
        train = self.dataset.train if plan.trains else None
        versions = {**tfenv.library_versions(), **be.versions()}
        provenance = {
            "variant": plan.id,
            "backend": be.name,
            "source_model": source.name,
            "source_hash": source.hash,
            **({"signature": source.signature_key} if source.signature_key != DEFAULT_SIGNATURE else {}),
            "calibration_hash": calibration.hash if calibration is not None else None,
            "calibration_size": len(calibration) if calibration is not None else 0,
            "training_hash": train.hash if train is not None else None,
            "precision_params": {k: v for k, v in sorted(params.items()) if _jsonable(v)},
            "fingerprints": {
                spec.id: stage.fingerprint({**stage.params, **dict(spec.params)})
                for spec, stage in plan.stages if stage.fingerprint is not None
            },
            "versions": versions,
        }
        key = cache_key(provenance)

        def make() -> Artifact:
            report, what = progress.emitter(self.log), f"{plan.id} for {be.name} ({source.name})"
            report.build(what)
            started = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    # TensorFlow's own converter calibrates through the deprecated tf.lite.Interpreter: its
                    # deprecation warning is not about the user's code
                    warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated",
                                            category=UserWarning)
                    built_from, stages = self._transform(plan, self.source, train, report)
                    built = be.build(built_from, recipe, calibration, params)
            except BaseException:
                report.ended(what, time.perf_counter() - started, ok=False)  # a live bar is taken down
                raise
            report.ended(what, time.perf_counter() - started)
            meta = {**built.metadata, **provenance, "stages": stages, "cache_key": key}
            return Artifact(built.content, meta, be.artifact_suffix)

        artifact = self.cache.get_or_build(key, make)
        if self._source is not None and self._identity is None and self._record_name() is not None:
            # after a build that worked: a failed one leaves nothing in the cache, this record included
            self._identity = self._source
            self.cache.write_record(self._record, identity.to_record(self._source))
        return artifact

    def _transform(self, plan: Plan, source: SourceModel, train: Dataset | None,
                   report: progress.Emitter) -> tuple[SourceModel, list[dict]]:
        """Apply the plan's model-level transforms; returns the model to convert and per-stage stats."""
        if not plan.transforms:
            return source, []
        model: Any = source
        stages = []
        for spec, recipe in plan.transforms:
            report.stage(spec.id)
            if recipe.needs_keras and isinstance(model, SourceModel):
                model = as_tf_keras(model.model, model.kind, model.name)
            # the recipe's log: callable with a line, as always; it also takes progress.step (its epochs)
            model, stats = recipe.apply(model, train, {**recipe.params, **dict(spec.params)}, report)
            stages.append({"stage": spec.id, **stats})
        if isinstance(model, SourceModel):  # e.g. graphopt hands back a SavedModel
            return model, stages
        return from_keras(model, f"{source.name}:{plan.id}", path=None), stages

    def runnable(self, variant: str, backend: str = "tflite") -> RunnableModel:
        """``variant`` built and loaded on ``backend`` (memoized)."""
        plan = self.variants.resolve(variant)
        memo = (plan.id, backend)
        if memo not in self._runnables:
            artifact = self.build(plan.id, backend)
            runner = self.backend(backend).load(artifact, self.threads)
            eval_data = self._evaluation_or_none()
            if eval_data is not None:
                self.identity.check_inputs(eval_data.x, "evaluation data")
            self._runnables[memo] = RunnableModel(plan.id, backend, artifact, runner, eval_data, self.latency_settings,
                                                  open_runner=functools.partial(self.backend(backend).load, artifact),
                                                  store=self.measurement_store)
        return self._runnables[memo]

    def reference(self, backend: str = "tflite") -> RunnableModel:
        """The fp32 variant on ``backend``: what budgets compare against."""
        return self.runnable("fp32", backend)

    def _evaluation_or_none(self) -> Dataset | None:
        if self._dataset_arg is None and self._dataset is None:
            return None
        return self.eval_dataset


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _is_keras_model(value: Any) -> bool:
    return not isinstance(value, (str, os.PathLike, SourceModel)) and any(
        cls.__name__ == "Model" for cls in type(value).__mro__)
