"""Model-level transforms from tensorflow-model-optimization: pruning, clustering, QAT.

Each takes a tf_keras model and the labelled training split, fine-tunes it (seeded,
op determinism on) and returns the stripped model plus statistics that land in the
artifact metadata: per-layer sparsity for ``pruned``, per-layer unique weight values
for ``clustered``. Chain them with a precision: ``pruned(sparsity=0.8)+int8``.
"""

from __future__ import annotations

import math
from typing import Any

from .. import tfenv
from ..dataset import Dataset
from ..errors import ConversionError, UsageError, first_line
from . import Recipe, VariantRegistry
from .training import (
    Log,
    fine_tune,
    kernel_layers,
    positive_float,
    positive_int,
    require_training_data,
    sparsity,
    unique_weights,
)

TRAIN_PARAMS = {"epochs": 10, "batch_size": 32, "learning_rate": 1e-3}
# Defaults measured in benchmarks/COMPRESSION.md on the digits CNN: pruning to 0.8 loses 8.9 points after
# 2 epochs and 1.6 after 10; QAT's learned ranges start at [-6, 6] and need ~10 epochs to beat calibration.


def _validate_training(params: dict[str, Any]) -> None:
    positive_int(params, "epochs")
    positive_int(params, "batch_size")
    positive_float(params, "learning_rate")


def _wrapped_kernel_layers(wrapped: Any, model: Any, wrapper: str) -> list[str]:
    """Names of the kernel layers tfmot wrapped with ``wrapper``."""
    kernels = {layer.name for layer in kernel_layers(model)}
    return [lay.layer.name for lay in wrapped.layers if type(lay).__name__ == wrapper and lay.layer.name in kernels]


# ---- pruning ----------------------------------------------------------------
def _parse_m_by_n(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        m, n = (int(v) for v in str(value).split(":"))
    except ValueError:
        raise UsageError(f"m_by_n={value!r} must look like '2:4' (keep M of every N weights)") from None
    if not 0 < m < n:
        raise UsageError(f"m_by_n={value!r}: need 0 < M < N, e.g. '2:4'")
    return m, n


def _validate_pruned(params: dict[str, Any]) -> None:
    _validate_training(params)
    s = params["sparsity"]
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1 or math.isnan(s):
        raise UsageError(f"pruned(sparsity={s!r}): sparsity must be in [0, 1), e.g. 0.8")
    if params["schedule"] not in ("polynomial", "constant"):
        raise UsageError(f"pruned(schedule={params['schedule']!r}): use 'polynomial' or 'constant'")
    _parse_m_by_n(params["m_by_n"])


def _pruned(model: Any, train: Dataset, params: dict[str, Any], log: Log) -> tuple[Any, dict[str, Any]]:
    require_training_data(train, "pruned")
    mot = tfenv.tfmot()
    sk = mot.sparsity.keras
    steps = max(1, math.ceil(len(train) / params["batch_size"]) * params["epochs"])
    m_by_n = _parse_m_by_n(params["m_by_n"])
    target = params["sparsity"]
    if params["schedule"] == "constant" or m_by_n:
        schedule = sk.ConstantSparsity(target if not m_by_n else 0.5, begin_step=0, frequency=1)
    else:  # reach the target by mid-training, then fine-tune at it
        schedule = sk.PolynomialDecay(0.0, target, begin_step=0, end_step=max(1, steps // 2), frequency=1)
    kwargs = {"sparsity_m_by_n": m_by_n} if m_by_n else {}
    try:
        wrapped = sk.prune_low_magnitude(model, pruning_schedule=schedule, **kwargs)
    except ValueError as exc:
        raise ConversionError(f"tfmot cannot prune {model.name}: {first_line(exc)}") from None
    touched = _wrapped_kernel_layers(wrapped, model, "PruneLowMagnitude")
    if not touched:
        raise ConversionError(
            f"{model.name} has no prunable layers (Dense, Conv): pruning would change nothing; use another variant"
        )
    log(f"pruned: sparsity {target:g} ({params['schedule'] if not m_by_n else 'm_by_n ' + params['m_by_n']}) on {', '.join(touched)}")
    fine_tune(wrapped, train, stage="pruned", epochs=params["epochs"], batch_size=params["batch_size"],
              learning_rate=params["learning_rate"], log=log, callbacks=[sk.UpdatePruningStep()])
    stripped = sk.strip_pruning(wrapped)
    per_layer = {k: v for k, v in sparsity(stripped).items() if k in touched}
    stats: dict[str, Any] = {"sparsity": per_layer, "touched_layers": touched}
    if m_by_n:  # tfmot silently leaves layers whose input channels cannot hold an M:N pattern
        skipped = [k for k, v in per_layer.items() if v == 0]
        if skipped:
            log(f"pruned: m_by_n {params['m_by_n']} does not fit {', '.join(skipped)}; tfmot left them dense")
            stats = {"sparsity": {k: v for k, v in per_layer.items() if k not in skipped},
                     "touched_layers": [k for k in touched if k not in skipped], "skipped_layers": skipped}
    return stripped, stats


# ---- clustering -------------------------------------------------------------
INITS = ("kmeans_plus_plus", "linear", "random", "density_based")


def _validate_clustered(params: dict[str, Any]) -> None:
    _validate_training(params)
    positive_int(params, "clusters", minimum=2)
    if params["init"] not in INITS:
        raise UsageError(f"clustered(init={params['init']!r}): use one of {', '.join(INITS)}")


def _clustered(model: Any, train: Dataset, params: dict[str, Any], log: Log) -> tuple[Any, dict[str, Any]]:
    require_training_data(train, "clustered")
    mot = tfenv.tfmot()
    ck = mot.clustering.keras
    init = getattr(ck.CentroidInitialization, params["init"].upper())
    wrapped = ck.cluster_weights(model, number_of_clusters=params["clusters"], cluster_centroids_init=init)
    if wrapped is None:
        raise ConversionError(f"tfmot could not cluster {model.name} (cluster_weights returned None): use a tf_keras model")
    touched = _wrapped_kernel_layers(wrapped, model, "ClusterWeights")
    if not touched:
        raise ConversionError(f"{model.name} has no clusterable layers (Dense, Conv): use another variant")
    log(f"clustered: {params['clusters']} clusters ({params['init']}) on {', '.join(touched)}")
    fine_tune(wrapped, train, stage="clustered", epochs=params["epochs"], batch_size=params["batch_size"],
              learning_rate=params["learning_rate"], log=log)
    stripped = ck.strip_clustering(wrapped)
    per_layer = {k: v for k, v in unique_weights(stripped).items() if k in touched}
    return stripped, {"unique_weights": per_layer, "touched_layers": touched}


# ---- quantization-aware training ------------------------------------------------
def _qat(model: Any, train: Dataset, params: dict[str, Any], log: Log) -> tuple[Any, dict[str, Any]]:
    require_training_data(train, "qat")
    mot = tfenv.tfmot()
    try:
        annotated = _quantize_model(model, mot.quantization.keras)
    except (ValueError, RuntimeError) as exc:
        raise ConversionError(f"tfmot cannot quantize {model.name}: {first_line(exc)}") from None
    log("qat: quantization-aware fine-tuning")
    fine_tune(annotated, train, stage="qat", epochs=params["epochs"], batch_size=params["batch_size"],
              learning_rate=params["learning_rate"], log=log)
    return annotated, {"touched_layers": [layer.name for layer in annotated.layers if "quant" in layer.name]}


def _quantize_model(model: Any, qk: Any) -> Any:
    """``quantize_model``, except that layers fed by integer inputs stay float (see :func:`annotate_for_qat`)."""
    return qk.quantize_apply(annotate_for_qat(model, qk))


def annotate_for_qat(model: Any, qk: Any) -> Any:
    """``quantize_annotate_model``, except that layers fed by integer inputs (ids into an Embedding) stay float.

    Annotating the whole model puts a fake-quant layer on every model input, which cannot take token or
    feature ids: annotate every other layer instead, so ``quantize_apply`` quantizes only float paths.
    """
    if all(_floating(t) for t in model.inputs):
        return qk.quantize_annotate_model(model)
    import tf_keras

    def annotate(layer: Any) -> Any:
        fresh = type(layer).from_config(layer.get_config())
        if isinstance(layer, tf_keras.layers.InputLayer) or not all(_floating(t) for t in _inputs_of(layer)):
            return fresh
        return qk.quantize_annotate_layer(fresh)

    annotated = tf_keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    return annotated


def _floating(tensor: Any) -> bool:
    return bool(getattr(tensor.dtype, "is_floating", True))


def _inputs_of(layer: Any) -> list[Any]:
    value = layer.input
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, (list, tuple)) else [value]


def register(registry: VariantRegistry) -> None:
    """Register the tfmot transforms."""
    registry.register(Recipe(
        "pruned", description="magnitude pruning (tfmot prune_low_magnitude), fine-tuned, stripped",
        params={"sparsity": 0.8, "schedule": "polynomial", "m_by_n": None, **TRAIN_PARAMS},
        apply=_pruned, validate=_validate_pruned,
    ))
    registry.register(Recipe(
        "clustered", description="weight clustering (tfmot cluster_weights), fine-tuned, stripped",
        params={"clusters": 16, "init": "kmeans_plus_plus", **TRAIN_PARAMS, "epochs": 1, "learning_rate": 1e-4},
        apply=_clustered, validate=_validate_clustered,
        # per-channel int8 scales each output channel's copy of the k centroids differently (16 clusters
        # become ~50 int8 values per layer) and undoes what clustering buys in gzip size; one scale
        # per tensor keeps k values. int8(per_channel=True) still asks for per-channel.
        precision_params={"per_channel": False},
    ))
    registry.register(Recipe(
        "qat", description="quantization-aware training (tfmot quantize_model), then full-integer conversion",
        params={**TRAIN_PARAMS, "epochs": 10, "learning_rate": 1e-4},
        apply=_qat, validate=_validate_training, default_precision="int8",
    ))
