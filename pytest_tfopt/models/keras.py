"""Keras sources: ``.keras`` and ``.h5``/``.hdf5`` files and in-memory Keras models.

Each file is loaded with the Keras that wrote it (Keras 3 or tf_keras/Keras 2, read from the file's
own metadata), in safe mode: a Python ``lambda`` in a Lambda layer is refused, never run. A model's
hash (the artifact cache's key) covers its config, or a description of its layers when the config
cannot be serialized, and every weight.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import Any

import numpy as np

from .. import tfenv
from ..errors import ModelLoadError
from ..keras_io import (
    inputs_by_name,
    keras_input_names,
    keras_output_names,
    per_sample,
    structure_of,
    traced_subclassed,
)
from ..signature import Signature, TensorInfo, dtype_name
from .source import SourceModel, damaged

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_keras_zip(path: str) -> SourceModel:
    """A ``.keras`` zip, loaded with the Keras its ``metadata.json`` names (``keras_version`` 2: tf_keras)."""
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("metadata.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise damaged(path, exc) from None
    if not isinstance(meta, dict):
        raise damaged(path, ValueError("metadata.json is not a JSON object"))
    major = str(meta.get("keras_version", "3")).split(".")[0]
    return _load_with_keras(path, "tf_keras" if major == "2" else "keras3")


def load_h5(path: str) -> SourceModel:
    """An ``.h5``/``.hdf5`` file, loaded with the Keras its ``keras_version`` attribute names."""
    with open(path, "rb") as fh:
        if fh.read(8) != HDF5_MAGIC:
            raise damaged(path, ValueError("not an HDF5 file"))
    flavour = "keras3"
    try:
        import h5py

        with h5py.File(path, "r") as f:
            version = _text_attr(f.attrs.get("keras_version", b""))
            config = _text_attr(f.attrs.get("model_config", b""))
        if version.startswith("2"):
            flavour = "tf_keras"
    except Exception as exc:  # h5py raises many kinds on damaged files
        raise damaged(path, exc) from None
    if flavour == "tf_keras" and _has_python_lambda(config):
        # tf_keras ignores safe_mode for .h5 files and would run the marshalled lambda: refuse it here.
        raise _unsafe(path)
    return _load_with_keras(path, flavour)


def _text_attr(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _has_python_lambda(config: str) -> bool:
    """Whether a Keras model config holds serialized Python bytecode (a ``lambda`` in a Lambda layer)."""
    try:
        tree = json.loads(config) if config else None
    except ValueError:
        return False  # let the loader report the damage
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any(k.endswith("_type") and v == "lambda" for k, v in node.items()):
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _unsafe(path: str) -> ModelLoadError:
    return ModelLoadError(
        f"model {path!r} contains Python code (a Lambda layer) that safe mode refuses to run: "
        "load it yourself with safe_mode=False if you trust it and return the model from the "
        "tfopt_model fixture"
    )


def _keras_module(flavour: str) -> Any:
    tfenv.tensorflow()
    if flavour == "tf_keras":
        try:
            import tf_keras
        except ImportError:
            raise ModelLoadError("this model was saved by tf_keras (Keras 2): pip install tf-keras") from None
        return tf_keras
    import keras

    return keras


def _load_with_keras(path: str, flavour: str) -> SourceModel:
    keras = _keras_module(flavour)
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text:
            raise _unsafe(path) from None
        raise damaged(path, exc) from None
    return from_keras(model, os.path.basename(path), path=path)


def keras_flavour(obj: Any) -> str | None:
    """``"keras3"`` or ``"tf_keras"`` for a Keras model of either, ``None`` for anything else."""
    for cls in type(obj).__mro__:
        module = cls.__module__
        if cls.__name__ == "Model" and module.startswith("tf_keras"):
            return "tf_keras"
        if cls.__name__ == "Model" and module.startswith("keras"):
            return "keras3"
    return None


def from_keras(model: Any, name: str, path: str | None, input_dtypes: dict[Any, str] | None = None) -> SourceModel:
    """An in-memory Keras model as a :class:`SourceModel` named ``name``; ``path`` is the file it came from.

    A subclassed model without defined inputs is described by its traced call (``input_dtypes``: the
    data's dtypes by input name, which the trace does not record).
    """
    flavour = keras_flavour(model)
    try:
        inputs = list(model.inputs or [])  # tf_keras subclassed models have inputs None
    except (AttributeError, ValueError, TypeError):
        inputs = []
    if not inputs:
        traced = traced_subclassed(model, name, input_dtypes or {})
        if traced is not None:
            return SourceModel(flavour, name, traced[0], _hash_keras(model), model=model, path=path,
                               input_structure=traced[1])
        raise ModelLoadError(
            f"model {name!r} has no defined inputs: build it with an Input layer, or wrap it as "
            "keras.Model(inp, model(inp)) with inp = keras.Input(shape); call a subclassed model once on a batch "
            "before returning it (its traced call gives the inputs), or export it with "
            "model.export(path, input_signature=[...]) and point tfopt_model at the SavedModel"
        )
    in_names = keras_input_names(model)
    by_name = inputs_by_name(model, inputs, in_names)
    ins = tuple(TensorInfo(n, per_sample(by_name[n].shape), dtype_name(by_name[n].dtype)) for n in in_names)
    out_names = keras_output_names(model)
    out_struct = structure_of(model, "outputs")
    # a dict's tensors by key: Keras keeps model.outputs in flattened (sorted) order, not the dict's
    out_by_name = dict(out_struct) if isinstance(out_struct, dict) else dict(zip(out_names, model.outputs, strict=True))
    outs = tuple(TensorInfo(n, per_sample(out_by_name[n].shape), dtype_name(out_by_name[n].dtype)) for n in out_names)
    _check_names(name, ins, outs)
    return SourceModel(flavour, name, Signature(ins, outs), _hash_keras(model), model=model, path=path)


def _check_names(model: str, ins: tuple[TensorInfo, ...], outs: tuple[TensorInfo, ...]) -> None:
    for kind, items in (("input", ins), ("output", outs)):
        names = [t.name for t in items]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ModelLoadError(f"model {model!r} has several {kind}s named {', '.join(dup)}: give each {kind} "
                                 "its own name (the layer's name=...)")


def _hash_keras(model: Any) -> str:
    h = hashlib.sha256()
    try:
        h.update(model.to_json().encode())
    except Exception:  # a custom layer without get_config(): describe the layers instead
        h.update(_describe_layers(model).encode())
    for w in model.get_weights():
        w = np.ascontiguousarray(w)
        h.update(f"{w.dtype.str}{w.shape}".encode())
        h.update(w.tobytes())
    return h.hexdigest()


def _describe_layers(model: Any) -> str:
    """A deterministic description of a model whose config cannot be serialized.

    Each layer contributes its class, name and config; a layer whose ``get_config()`` fails
    contributes its public plain-value attributes (numbers, strings, arrays), so constants
    passed to its constructor still reach the hash.
    """
    flatten = getattr(model, "_flatten_layers", None)
    layers = list(flatten()) if callable(flatten) else [model, *getattr(model, "layers", [])]
    parts = []
    for layer in layers:
        cls = type(layer)
        try:
            config = json.dumps(layer.get_config(), sort_keys=True, default=repr)
        except Exception:
            config = json.dumps(_plain_attributes(layer), sort_keys=True)
        parts.append(f"{cls.__module__}.{cls.__qualname__}:{getattr(layer, 'name', '')}:{config}")
    return "\n".join(parts)


def _plain_attributes(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted(vars(obj).items()):
        if key.startswith("_"):
            continue
        if isinstance(value, np.ndarray):
            value = np.ascontiguousarray(value)
            out[key] = f"{value.dtype.str}{value.shape}:{hashlib.sha256(value.tobytes()).hexdigest()}"
        elif isinstance(value, (bool, int, float, str, type(None))):
            out[key] = value
        elif isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            out[key] = list(value)
    return out
