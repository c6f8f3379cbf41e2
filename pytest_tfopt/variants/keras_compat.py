"""Rebuild a Keras 3 model in tf_keras (Keras 2) from its config and weights, for tfmot.

Keras 3 configs differ from Keras 2 in a few regular ways: ``batch_shape`` for
``batch_input_shape``, dtype policies as objects, extra constructor arguments, and
functional ``inbound_nodes`` as call arguments holding ``__keras_tensor__`` records.
This module translates those; layers tf_keras does not have make the rebuild fail,
and the caller reports what to do.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import numpy as np

BASE_KEYS = {"name", "trainable", "dtype", "batch_input_shape", "input_shape", "input_dim", "sparse", "ragged"}


def _clean_layer_config(tf_keras: Any, class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    cls = getattr(tf_keras.layers, class_name, None)
    if cls is None:
        return config
    allowed = set(inspect.signature(cls.__init__).parameters) | BASE_KEYS
    out = {}
    for key, value in config.items():
        key = "batch_input_shape" if key == "batch_shape" else key
        if key not in allowed:
            continue
        if isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
            value = value["config"]["name"]
        elif isinstance(value, dict) and str(value.get("module", "")).startswith("keras.") and "class_name" in value:
            value = {"class_name": value["class_name"], "config": {}}  # initializers etc.: weights are copied anyway
        out[key] = value
    return out


def _node(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    tensors: list[list[Any]] = []

    def collect(arg: Any) -> None:
        if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
            layer, node_index, tensor_index = arg["config"]["keras_history"]
            tensors.append([layer, node_index, tensor_index, {}])
        elif isinstance(arg, (list, tuple)):
            for item in arg:
                collect(item)

    collect(node.get("args", []))
    return tensors


def _clean(tf_keras: Any, obj: Any) -> Any:
    if isinstance(obj, list):
        return [_clean(tf_keras, v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "class_name" in obj and isinstance(obj.get("config"), dict) and str(obj.get("module", "")).startswith("keras.layers"):
        layer = {k: v for k, v in obj.items() if k != "build_config"}
        layer["config"] = _clean_layer_config(tf_keras, obj["class_name"], obj["config"])
        if "inbound_nodes" in layer:
            layer["inbound_nodes"] = [_node(n) for n in layer["inbound_nodes"]]
        return layer
    return {k: _clean(tf_keras, v) for k, v in obj.items()}


def rebuild_in_tf_keras(model: Any) -> Any:
    """A tf_keras model with ``model``'s architecture and weights; raises when outputs differ.

    Dict-structured inputs/outputs (Keras 3 ``input_layers``/``output_layers`` as mappings) are rebuilt
    as lists and wrapped back into a tf_keras model with the same dict structure and names.
    """
    import tf_keras

    config = json.loads(model.to_json())
    inner = config.get("config", {})
    structure: dict[str, list[str] | None] = {"input_layers": None, "output_layers": None}
    if isinstance(inner, dict) and "layers" in inner:
        inner["layers"] = [_clean(tf_keras, layer) for layer in inner["layers"]]
        for key in ("input_layers", "output_layers"):
            value = inner.get(key)
            if isinstance(value, dict):
                structure[key] = list(value)
                inner[key] = [value[k] for k in value]
            elif value and not isinstance(value[0], list):
                inner[key] = [value]
    clone = tf_keras.models.model_from_json(json.dumps(config))
    if structure["input_layers"] or structure["output_layers"]:
        ins = structure["input_layers"]
        outs = structure["output_layers"]
        clone = tf_keras.Model(dict(zip(ins, clone.inputs, strict=True)) if ins else clone.inputs,
                               dict(zip(outs, clone.outputs, strict=True)) if outs else clone.outputs,
                               name=clone.name)
    clone.set_weights(model.get_weights())
    probe = _probe(model)
    ours, theirs = _flat(clone(probe, training=False)), _flat(model(probe, training=False))
    if len(ours) != len(theirs) or not all(np.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs, strict=True)):
        raise ValueError("the rebuilt model computes different outputs")
    return clone


def _probe(model: Any) -> Any:
    """Two samples for every input (small non-negative integers for integer inputs, free axes as 1)."""
    rng = np.random.default_rng(0)

    def one(t: Any) -> np.ndarray:
        shape = (2, *(d or 1 for d in t.shape[1:]))
        dtype = np.dtype(getattr(t.dtype, "name", t.dtype))
        return rng.random(shape).astype(dtype) if np.issubdtype(dtype, np.floating) else np.zeros(shape, dtype)

    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict):
        return {k: one(v) for k, v in struct.items()}
    probes = [one(t) for t in model.inputs]
    return probes[0] if len(probes) == 1 else probes


def _flat(y: Any) -> list[np.ndarray]:
    if isinstance(y, dict):
        return [np.asarray(y[k]) for k in sorted(y)]
    if isinstance(y, (list, tuple)):
        return [np.asarray(v) for v in y]
    return [np.asarray(y)]
