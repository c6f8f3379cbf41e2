"""Low-rank factorization: split Dense (and 1×1 Conv2D) kernels with a truncated SVD.

``lowrank(rank=8)`` replaces a layer with kernel ``W`` (in×out) by two layers:
``W ≈ (U_r·diag(S_r)) · V_r``, a linear, bias-free layer of ``r`` units (in×r) followed
by the original layer shrunk to ``r`` inputs (r×out, with the original bias and
activation). The rank is the same for every layer (``rank=R``) or chosen per layer as the
smallest ``r`` that keeps a fraction of the squared singular values (``energy=F``, in
(0, 1]). Give one of them; with neither, ``energy=0.9`` applies. A layer is factorized
only when that saves parameters (``r·(in+out) < in·out``); the others stay as they are.
``epochs > 0`` fine-tunes the factorized model on the labelled training split.

The model is rebuilt from its layer graph (Sequential or functional, each factorized layer
used once); subclassed models cannot be rebuilt and are a :class:`ConversionError`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from .. import tfenv
from ..dataset import Dataset
from ..errors import ConversionError, UsageError
from . import Recipe, VariantRegistry
from .training import Log, fine_tune, positive_float, positive_int, require_training_data

DEFAULT_ENERGY = 0.9
PARAMS = {"rank": None, "energy": None, "epochs": 0, "batch_size": 32, "learning_rate": 1e-4}


def _validate(params: dict[str, Any]) -> None:
    rank, energy = params["rank"], params["energy"]
    if rank is not None and energy is not None:
        raise UsageError(f"lowrank(rank={rank!r}, energy={energy!r}): give rank or energy, not both")
    if rank is not None:
        positive_int(params, "rank")
    if energy is not None and (
        isinstance(energy, bool) or not isinstance(energy, (int, float)) or math.isnan(energy) or not 0 < energy <= 1
    ):
        raise UsageError(f"lowrank(energy={energy!r}): energy must be in (0, 1], e.g. 0.9")
    positive_int(params, "epochs", minimum=0)
    positive_int(params, "batch_size")
    positive_float(params, "learning_rate")


# ---- which layers, which rank -----------------------------------------------------
def _candidate(layer: Any) -> str | None:
    """``"dense"`` / ``"conv1x1"`` when ``layer`` can be factorized, else ``None``."""
    import tf_keras

    if type(layer) is tf_keras.layers.Dense:  # exact class: not wrappers or subclasses with other maths
        return "dense"
    if (
        type(layer) is tf_keras.layers.Conv2D
        and tuple(layer.kernel_size) == (1, 1)
        and getattr(layer, "groups", 1) == 1
        and tuple(layer.dilation_rate) == (1, 1)
    ):
        return "conv1x1"
    return None


def _matrix(layer: Any) -> np.ndarray:
    kernel = np.asarray(layer.kernel)
    return kernel.reshape(kernel.shape[-2], kernel.shape[-1])  # (1, 1, in, out) → (in, out)


def _energy_rank(singular: np.ndarray, energy: float) -> int:
    squares = singular.astype(np.float64) ** 2
    total = squares.sum()
    if total == 0:
        return 1
    kept = np.cumsum(squares) / total
    return int(min(len(singular), np.searchsorted(kept, energy - 1e-12) + 1))


def _bias_params(layer: Any) -> int:
    return int(np.prod(layer.bias.shape)) if getattr(layer, "bias", None) is not None else 0


# ---- rebuilding the graph -----------------------------------------------------------
_Plans = dict[str, tuple[str, int, np.ndarray, np.ndarray]]
"""Layer name → (kind, rank, first-half kernel in×r, second-half kernel r×out), the layers to split."""


def _first_layer_name(entry: dict[str, Any]) -> str:
    return entry.get("name") or entry["config"]["name"]


def _u_entry(tf_keras: Any, kind: str, original: dict[str, Any], name: str, rank: int) -> dict[str, Any]:
    cfg = original["config"]
    common = {"name": name, "use_bias": False, "activation": "linear", "dtype": cfg.get("dtype"),
              "trainable": cfg.get("trainable", True)}
    if kind == "dense":
        layer = tf_keras.layers.Dense(rank, **common)
    else:
        layer = tf_keras.layers.Conv2D(rank, 1, strides=cfg["strides"], padding=cfg["padding"],
                                       data_format=cfg["data_format"], **common)
    entry = tf_keras.layers.serialize(layer)
    if "batch_input_shape" in cfg:  # the first layer of a Sequential without an InputLayer
        entry["config"]["batch_input_shape"] = cfg["batch_input_shape"]
    entry["name"] = name
    if "inbound_nodes" in original:
        entry["inbound_nodes"] = copy.deepcopy(original["inbound_nodes"])
    return entry


def _v_entry(kind: str, original: dict[str, Any], u_name: str) -> dict[str, Any]:
    entry = copy.deepcopy(original)
    entry.pop("build_config", None)  # it records the old input width
    entry["config"].pop("batch_input_shape", None)
    if kind == "conv1x1":
        entry["config"]["strides"] = [1, 1]  # the first half already strides
        entry["config"]["padding"] = "valid"
    if "inbound_nodes" in original:
        entry["inbound_nodes"] = [[[u_name, 0, 0, {}]]]
    return entry


def _graph_config(model: Any) -> dict[str, Any]:
    """The config of a Sequential or functional ``model``: its layers and how they connect."""
    import tf_keras

    if not isinstance(model, tf_keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise ConversionError(
            f"lowrank rebuilds the model from its layer graph but {model.name} is a subclassed model: "
            "build it with the Sequential or functional API"
        )
    try:
        config = model.get_config()
    except NotImplementedError:
        config = None
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ConversionError(
            f"lowrank cannot read the layer graph of {model.name} (its config has no layer list): "
            "build it with the Sequential or functional API"
        )
    return copy.deepcopy(config)


def _rebuild(model: Any, config: dict[str, Any], plans: _Plans) -> Any:
    """``model`` (whose config is ``config``) with each planned layer split in two, weights copied and set."""
    import tf_keras

    is_sequential = isinstance(model, tf_keras.Sequential)
    taken = {layer.name for layer in model.layers}
    entries: list[dict[str, Any]] = []
    u_names: dict[str, str] = {}
    for entry in config["layers"]:
        name = _first_layer_name(entry)
        if name not in plans:
            entries.append(entry)
            continue
        kind, rank = plans[name][0], plans[name][1]
        u_name = f"{name}_lowrank"
        while u_name in taken:
            u_name += "_"
        taken.add(u_name)
        u_names[name] = u_name
        entries.append(_u_entry(tf_keras, kind, entry, u_name, rank))
        entries.append(_v_entry(kind, entry, u_name))
    config["layers"] = entries
    try:
        if is_sequential:
            rebuilt = tf_keras.Sequential.from_config(config)
        else:
            rebuilt = tf_keras.Model.from_config(config)
    except Exception as exc:  # custom layers, unusual graphs: say so rather than crash
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConversionError(
            f"lowrank could not rebuild {model.name} with factorized layers ({first}): "
            "use a Sequential or functional model of standard layers"
        ) from None
    for layer in model.layers:
        if layer.name in plans:
            _, _, first, second = plans[layer.name]
            u_layer, v_layer = rebuilt.get_layer(u_names[layer.name]), rebuilt.get_layer(layer.name)
            u_layer.kernel.assign(first.reshape(u_layer.kernel.shape))
            v_layer.kernel.assign(second.reshape(v_layer.kernel.shape))
            if getattr(layer, "bias", None) is not None:
                v_layer.bias.assign(np.asarray(layer.bias))
        elif layer.weights:
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
    return rebuilt


# ---- the transform ---------------------------------------------------------------
def _plan(model: Any, candidates: list[tuple[Any, str]], config: dict[str, Any], rank: int | None,
          energy: float | None, log: Log) -> tuple[_Plans, dict[str, dict[str, Any]], dict[str, str]]:
    """Which candidate layers to split at which rank: (plans, per-layer stats, skipped layer → why)."""
    config_entries = {_first_layer_name(e): e for e in config["layers"]}
    plans: _Plans = {}
    per_layer: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for layer, kind in candidates:
        w = _matrix(layer)
        n_in, n_out = w.shape
        if rank is not None and rank > min(n_in, n_out):
            raise UsageError(
                f"lowrank(rank={rank}): layer {layer.name!r} has a {n_in}x{n_out} kernel, so its rank is at most "
                f"{min(n_in, n_out)}: choose rank <= {min(n_in, n_out)} or use energy=..."
            )
        if len(config_entries.get(layer.name, {}).get("inbound_nodes", [None])) > 1:
            skipped[layer.name] = "shared layer (called more than once)"
            continue
        u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
        r = rank if rank is not None else _energy_rank(s, energy)
        if r * (n_in + n_out) >= n_in * n_out:
            how = "" if rank is not None else f" (for energy={energy:g})"
            skipped[layer.name] = f"rank {r}{how} saves no parameters on a {n_in}x{n_out} kernel"
            continue
        kept = float((s[:r] ** 2).sum() / max((s**2).sum(), np.finfo(np.float64).tiny))
        dtype = np.asarray(layer.kernel).dtype
        plans[layer.name] = (kind, r, (u[:, :r] * s[:r]).astype(dtype), vt[:r].astype(dtype))
        bias = _bias_params(layer)
        per_layer[layer.name] = {"rank": r, "params_before": n_in * n_out + bias,
                                 "params_after": r * (n_in + n_out) + bias, "energy": round(kept, 6)}
        log(f"lowrank: {layer.name} {n_in}x{n_out} -> rank {r} ({per_layer[layer.name]['params_before']} -> "
            f"{per_layer[layer.name]['params_after']} params, {kept:.1%} energy kept)")
    if not plans:
        setting = f"rank={rank}" if rank is not None else f"energy={energy:g}"
        raise ConversionError(
            f"lowrank({setting}) makes no layer of {model.name} smaller ({'; '.join(f'{k}: {v}' for k, v in skipped.items())}): "
            "use a lower rank or energy"
        )
    return plans, per_layer, skipped


def _lowrank(model: Any, train: Dataset | None, params: dict[str, Any], log: Log) -> tuple[Any, dict[str, Any]]:
    tfenv.tensorflow()
    rank, energy = params["rank"], params["energy"]
    if rank is None and energy is None:
        energy = DEFAULT_ENERGY
    if params["epochs"] > 0:
        if train is None:
            raise ConversionError("lowrank(epochs>0) fine-tunes the model but no training split was given")
        require_training_data(train, "lowrank")
    candidates = [(layer, kind) for layer in model.layers if (kind := _candidate(layer))]
    if not candidates:
        raise ConversionError(
            f"{model.name} has no factorizable layers (Dense, 1x1 Conv2D): lowrank would change nothing; "
            "use another variant"
        )
    config = _graph_config(model)
    plans, per_layer, skipped = _plan(model, candidates, config, rank, energy, log)
    rebuilt = _rebuild(model, config, plans)
    if params["epochs"] > 0:
        fine_tune(rebuilt, train, stage="lowrank", epochs=params["epochs"], batch_size=params["batch_size"],
                  learning_rate=params["learning_rate"], log=log)
    stats: dict[str, Any] = {
        "lowrank": per_layer,
        "params_before": int(model.count_params()),
        "params_after": int(rebuilt.count_params()),
        "touched_layers": list(plans),
    }
    if skipped:
        stats["skipped_layers"] = skipped
    return rebuilt, stats


def register(registry: VariantRegistry) -> None:
    """Register the low-rank factorization transform."""
    registry.register(Recipe(
        "lowrank",
        description="truncated-SVD factorization of Dense and 1x1 Conv2D kernels (rank=R or energy=F, "
                    "default energy=0.9), optionally fine-tuned",
        params=dict(PARAMS), apply=_lowrank, validate=_validate,
    ))
