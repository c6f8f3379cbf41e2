"""Collaborative optimization (tfmot): compress, then quantization-aware training that keeps it.

``pqat`` prunes, then fine-tunes with pruning-preserving QAT; ``cqat`` clusters, then
cluster-preserving QAT; ``pcqat`` prunes, clusters keeping the zeros, then QAT preserving
both. Each ends in ``int8`` by default (``pqat(sparsity=0.5)`` means ``pqat(...)+int8``).
The statistics are measured on the kernels of the QAT model *after* its training, so the
metadata shows whether the sparsity / clusters survived: ``sparsity`` and ``unique_weights``
hold the final values (what ``min_sparsity`` / ``max_unique_weights`` check), and
``sparsity_after_pruning`` / ``unique_weights_after_clustering`` the values before QAT.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import tfenv
from ..dataset import Dataset
from ..errors import ConversionError, UsageError, first_line
from . import Recipe, VariantRegistry
from .tfmot_recipes import _clustered, _pruned, annotate_for_qat
from .training import Log, fine_tune, positive_float, positive_int, require_training_data

TRAIN = {"epochs": 1, "qat_epochs": 1, "batch_size": 32, "learning_rate": 1e-4}


# ---- parameters ------------------------------------------------------------------
def _check_sparsity(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value < 1:
        raise UsageError(f"{name}(sparsity={value!r}): sparsity must be in [0, 1), e.g. 0.5")


def _check_clusters(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise UsageError(f"{name}(clusters={value!r}): clusters must be an integer >= 2, e.g. 16")


def _validator(name: str) -> Any:
    def validate(params: dict[str, Any]) -> None:
        if "sparsity" in params:
            _check_sparsity(name, params["sparsity"])
        if "clusters" in params:
            _check_clusters(name, params["clusters"])
        try:
            for key in ("epochs", "qat_epochs", "batch_size"):
                positive_int(params, key)
            positive_float(params, "learning_rate")
        except UsageError as exc:
            raise UsageError(f"{name}: {exc}") from None

    return validate


# ---- measuring the QAT model ---------------------------------------------------------
def _qat_kernels(qat_model: Any) -> dict[str, np.ndarray]:
    """Float kernels of the quantize-wrapped layers, by wrapped layer name.

    After ``quantize_apply`` each layer is a ``QuantizeWrapperV2``. Its ``layer.kernel`` is
    *not* the variable any more once the model has been called: the wrapper replaces it by
    the fake-quantized (symbolic) tensor. The variable itself sits in the wrapper's
    ``_weight_vars`` (tfmot 0.8.1). The cluster-preserving quantizer writes the clustered
    weights back into it on every training step; the prune-preserving one masks the
    gradient, so the zeros stay zeros there.
    """
    out = {}
    for lay in qat_model.layers:
        if not type(lay).__name__.startswith("QuantizeWrapper"):
            continue
        for weight, _, _ in getattr(lay, "_weight_vars", []):
            if weight.name.split(":")[0].split("/")[-1] in ("kernel", "depthwise_kernel"):
                out[lay.layer.name] = np.asarray(weight.numpy())
    return out


def _sparsity(kernels: dict[str, np.ndarray], touched: list[str]) -> dict[str, float]:
    return {k: float(np.mean(v == 0)) for k, v in kernels.items() if k in touched}


def _unique(kernels: dict[str, np.ndarray], touched: list[str]) -> dict[str, int]:
    return {k: int(np.unique(v).size) for k, v in kernels.items() if k in touched}


def _per_channel(kernels: dict[str, np.ndarray], over: dict[str, int], clusters: int, stage: str,
                 log: Log) -> dict[str, int]:
    """Most distinct values in one output channel, for layers with more than ``clusters`` in all.

    tfmot's cluster-preserving quantizer guesses per Conv2D whether it was clustered per
    channel: when every output channel holds about as many distinct values (within one), it
    keeps separate centroids per channel, which then drift apart during QAT. The layer ends up
    with up to ``clusters`` values per channel but many more in all.
    """
    out = {}
    for name, count in over.items():
        kernel = kernels[name]
        if count > clusters and kernel.ndim == 4:
            out[name] = max(int(np.unique(kernel[..., c]).size) for c in range(kernel.shape[-1]))
            log(f"{stage}: tfmot kept {name}'s clusters per output channel: "
                f"{count} distinct weights in all, at most {out[name]} per channel")
    return out


def _preserving_qat(model: Any, train: Dataset, scheme: Any, stage: str, params: dict[str, Any],
                    log: Log) -> Any:
    """``quantize_annotate_model`` + ``quantize_apply(scheme)``, then QAT fine-tuning."""
    qk = tfenv.tfmot().quantization.keras
    try:
        annotated = annotate_for_qat(model, qk)
        qat = qk.quantize_apply(annotated, scheme)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ConversionError(f"tfmot cannot quantize {model.name} for {stage}: {first_line(exc)}") from None
    log(f"{stage}: {type(scheme).__name__} quantization-aware fine-tuning")
    fine_tune(qat, train, stage=f"{stage} qat", epochs=params["qat_epochs"], batch_size=params["batch_size"],
              learning_rate=params["learning_rate"], log=log)
    return qat


def _prune(model: Any, train: Dataset, params: dict[str, Any], stage: str, log: Log) -> tuple[Any, dict[str, Any]]:
    return _pruned(model, train, {"sparsity": params["sparsity"], "schedule": "polynomial", "m_by_n": None,
                                  "epochs": params["epochs"], "batch_size": params["batch_size"],
                                  "learning_rate": params["learning_rate"]}, _prefixed(log, stage))


def _prefixed(log: Log, stage: str) -> Log:
    return lambda message: log(f"{stage}/{message}")


# ---- the transforms ---------------------------------------------------------------------
def _pqat(model: Any, train: Dataset, params: dict[str, Any], log: Log) -> tuple[Any, dict[str, Any]]:
    require_training_data(train, "pqat")
    pruned, pstats = _prune(model, train, params, "pqat", log)
    touched = pstats["touched_layers"]
    scheme = tfenv.tfmot().experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    qat = _preserving_qat(pruned, train, scheme, "pqat", params, log)
    final = _sparsity(_qat_kernels(qat), touched)
    log(f"pqat: sparsity after QAT {_range(final)} (after pruning {_range(pstats['sparsity'])})")
    return qat, {"sparsity_after_pruning": pstats["sparsity"], "sparsity": final, "touched_layers": touched}


def _cqat(model: Any, train: Dataset, params: dict[str, Any], log: Log) -> tuple[Any, dict[str, Any]]:
    require_training_data(train, "cqat")
    clustered, cstats = _clustered(model, train, {"clusters": params["clusters"], "init": "kmeans_plus_plus",
                                                  "epochs": params["epochs"], "batch_size": params["batch_size"],
                                                  "learning_rate": params["learning_rate"]}, _prefixed(log, "cqat"))
    touched = cstats["touched_layers"]
    # preserve_sparsity defaults to True in tfmot 0.8.1 (it then warns per layer and falls back): be explicit
    scheme = tfenv.tfmot().experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False)
    qat = _preserving_qat(clustered, train, scheme, "cqat", params, log)
    kernels = _qat_kernels(qat)
    final = _unique(kernels, touched)
    log(f"cqat: unique weights after QAT {_range(final)} (after clustering {_range(cstats['unique_weights'])})")
    stats = {"unique_weights_after_clustering": cstats["unique_weights"], "unique_weights": final,
             "touched_layers": touched}
    per_channel = _per_channel(kernels, final, params["clusters"], "cqat", log)
    return qat, {**stats, "unique_weights_per_channel": per_channel} if per_channel else stats


def _pcqat(model: Any, train: Dataset, params: dict[str, Any], log: Log) -> tuple[Any, dict[str, Any]]:
    require_training_data(train, "pcqat")
    mot = tfenv.tfmot()
    ck = mot.clustering.keras
    pruned, pstats = _prune(model, train, params, "pcqat", log)
    touched = pstats["touched_layers"]
    try:
        wrapped = ck.cluster_weights(pruned, number_of_clusters=params["clusters"],
                                     cluster_centroids_init=ck.CentroidInitialization.KMEANS_PLUS_PLUS,
                                     preserve_sparsity=True)
    except ValueError as exc:
        raise ConversionError(f"tfmot cannot cluster {model.name} for pcqat: {first_line(exc)}") from None
    if wrapped is None:
        raise ConversionError(f"tfmot could not cluster {model.name} for pcqat (cluster_weights returned None)")
    log(f"pcqat: sparsity-preserving clustering, {params['clusters']} clusters on {', '.join(touched)}")
    fine_tune(wrapped, train, stage="pcqat clustering", epochs=params["epochs"], batch_size=params["batch_size"],
              learning_rate=params["learning_rate"], log=log)
    clustered = ck.strip_clustering(wrapped)
    kernels = {layer.name: np.asarray(layer.kernel) for layer in clustered.layers
               if getattr(layer, "kernel", None) is not None}
    after_clustering = {"sparsity": _sparsity(kernels, touched), "unique_weights": _unique(kernels, touched)}
    scheme = mot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    qat = _preserving_qat(clustered, train, scheme, "pcqat", params, log)
    final = _qat_kernels(qat)
    stats = {
        "sparsity_after_pruning": pstats["sparsity"],
        "sparsity_after_clustering": after_clustering["sparsity"],
        "unique_weights_after_clustering": after_clustering["unique_weights"],
        "sparsity": _sparsity(final, touched),
        "unique_weights": _unique(final, touched),
        "touched_layers": touched,
    }
    per_channel = _per_channel(final, stats["unique_weights"], params["clusters"], "pcqat", log)
    if per_channel:
        stats["unique_weights_per_channel"] = per_channel
    log(f"pcqat: after QAT sparsity {_range(stats['sparsity'])}, unique weights {_range(stats['unique_weights'])}")
    return qat, stats


def _range(values: dict[str, Any]) -> str:
    if not values:
        return "n/a"
    lo, hi = min(values.values()), max(values.values())
    return f"{lo:.3g}" if lo == hi else f"{lo:.3g}..{hi:.3g}"


def register(registry: VariantRegistry) -> None:
    """Register ``pqat``, ``cqat`` and ``pcqat``."""
    registry.register(Recipe(
        "pqat", description="pruning, then pruning-preserving QAT (tfmot collaborative optimization); ends in int8",
        params={"sparsity": 0.5, **TRAIN}, apply=_pqat, validate=_validator("pqat"), default_precision="int8",
    ))
    registry.register(Recipe(
        "cqat", description="clustering, then cluster-preserving QAT (tfmot collaborative optimization); ends in int8",
        params={"clusters": 16, **TRAIN}, apply=_cqat, validate=_validator("cqat"), default_precision="int8",
    ))
    registry.register(Recipe(
        "pcqat", description="pruning, sparsity-preserving clustering, then QAT preserving both; ends in int8",
        params={"sparsity": 0.5, "clusters": 8, **TRAIN}, apply=_pcqat, validate=_validator("pcqat"),
        default_precision="int8",
    ))
