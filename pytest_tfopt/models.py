"""Source models: load a ``.keras``/``.h5`` file, a SavedModel directory, a ``.tflite`` file
or an in-memory Keras model, and hash it for the artifact cache.

Each file is loaded with the Keras that wrote it (Keras 3 or tf_keras/Keras 2), so the
result never depends on what ``tf.keras`` happens to point at.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import tfenv
from .errors import ModelLoadError, first_line
from .keras_io import (
    inputs_by_name,
    keras_input_names,
    keras_input_structure,
    keras_output_names,
    keras_outputs,
    per_sample,
    structure_of,
    structured,
    traced_subclassed,
)
from .litert import inspect_tflite
from .signature import Signature, TensorInfo, check_array, dtype_name

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
DEFAULT_SIGNATURE = "serving_default"


@dataclass(eq=False)
class SourceModel:
    """The FP32 model every variant is built from.

    ``kind`` is ``"keras3"``, ``"tf_keras"``, ``"saved_model"`` or ``"tflite"``; ``signature`` names its
    inputs and outputs (see :mod:`pytest_tfopt.signature` for the names and their order);
    ``signature_key`` is the SavedModel/TFLite signature used (``serving_default`` unless told).
    """

    kind: str
    name: str
    signature: Signature
    hash: str
    model: Any = None
    path: str | None = None
    content: bytes | None = field(default=None, repr=False)
    signature_key: str = DEFAULT_SIGNATURE
    #: how a subclassed Keras model takes its inputs (a dict's names or one name), known from its traced call
    input_structure: Any = None

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """Per-sample shape of the first input (``None`` for free axes)."""
        return self.signature.inputs[0].shape

    @property
    def input_dtype(self) -> str:
        """dtype of the first input."""
        return self.signature.inputs[0].dtype

    def serving_function(self, model: Any = None, cast_to_float32: bool = False) -> Any:
        """A ``tf.function`` taking one dict input name → tensor and returning a dict output name → tensor.

        Its input signature holds one ``TensorSpec`` per input, named after it (batch axis free), so
        TFLite signatures, SavedModel signatures and ONNX graphs made from it use the model's own
        names. ``model`` replaces ``self.model`` (e.g. a bfloat16 rebuild of a Keras model).
        """
        tf = tfenv.tensorflow()
        specs = {t.name: tf.TensorSpec((None, *t.shape), t.dtype, name=t.name) for t in self.signature.inputs}
        names = self.signature.output_names
        if self.kind == "saved_model":
            sig = self.model.signatures[self.signature_key]

            def call(feed: Any) -> Any:
                out = sig(**feed)
                return {n: out[n] for n in names}
        elif self.kind in ("keras3", "tf_keras"):
            keras_model = self.model if model is None else model
            structure = self.input_structure or keras_input_structure(keras_model)

            def call(feed: Any) -> Any:
                out = keras_outputs(keras_model(structured(feed, structure), training=False), names)
                return {n: tf.cast(v, tf.float32) for n, v in out.items()} if cast_to_float32 else out
        else:
            raise ModelLoadError(
                f"{self.name} is a {self.kind} model: this needs the Keras or SavedModel source"
            )
        return tf.function(call, input_signature=[specs])

    def converter(self) -> Any:
        """A fresh ``tf.lite.TFLiteConverter`` for this model; the TFLite signature keeps the input/output names."""
        tf = tfenv.tensorflow()
        if self.kind == "saved_model":
            return tf.lite.TFLiteConverter.from_saved_model(self.path, signature_keys=[self.signature_key])
        if self.kind == "tflite":
            raise ModelLoadError(
                f"{self.name} is already a .tflite file and cannot be converted again: point tfopt_model "
                "at the Keras or SavedModel source to build other variants"
            )
        fn = self.serving_function().get_concrete_function()
        # A trackable object holding the variables keeps the signature (names) in the .tflite; Keras 3
        # variables are tracked through the tf.Variable each one wraps (the Keras object itself would
        # convert to a graph that reads unset variables).
        holder = tf.Module()
        holder.variables_ = [_tf_variable(v) for v in self.model.variables]
        return tf.lite.TFLiteConverter.from_concrete_functions([fn], holder)

    def check_inputs(self, x: Any, what: str = "data set") -> None:
        """Raise a :class:`DatasetError` when ``x`` does not fit the model's inputs (names, shapes, dtypes)."""
        self.signature.feed(x, what, self.name, one_sample=False)


def _tf_variable(v: Any) -> Any:
    value = getattr(v, "value", None)
    tf = tfenv.tensorflow()
    return value if isinstance(value, tf.Variable) else v


def check_input_shape(expected: tuple[int | None, ...], x: np.ndarray, what: str, model: str) -> None:
    """Raise when per-sample shape of ``x`` does not match ``expected`` (``None`` matches anything)."""
    x = np.asarray(x)
    check_array(x, TensorInfo("input", tuple(expected), x.dtype.name if x.dtype.kind in "biuf" else "float32"),
                what, model, name_it=False)


def load_model(model: Any, signature: str = DEFAULT_SIGNATURE, input_dtypes: dict[Any, str] | None = None) -> SourceModel:
    """Load ``model`` (path or in-memory Keras model) as a :class:`SourceModel`.

    ``signature``: the SavedModel / ``.tflite`` signature to test (``ini tfopt_signature``).
    ``input_dtypes``: dtypes of the data by input name (``None`` for one unnamed array), for a subclassed
    Keras model whose traced call records shapes but not dtypes.
    """
    if isinstance(model, SourceModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return _load_path(os.fspath(model), signature or DEFAULT_SIGNATURE)
    if _keras_flavour(model) is not None:
        return _from_keras(model, getattr(model, "name", "model"), path=None, input_dtypes=input_dtypes)
    raise ModelLoadError(
        f"cannot use a {type(model).__module__}.{type(model).__name__} as a model: give a Keras model, "
        "or a path to a .keras/.h5 file, a SavedModel directory or a .tflite file"
    )


def _load_path(path: str, signature: str = DEFAULT_SIGNATURE) -> SourceModel:
    if not os.path.exists(path):
        raise ModelLoadError(f"model {path!r} does not exist: check tfopt_model / the path")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ModelLoadError(
                f"directory {path!r} is not a SavedModel (no saved_model.pb): export it with "
                "model.export(path) or tf.saved_model.save"
            )
        return _load_saved_model(path, signature)
    if os.path.getsize(path) == 0:
        raise ModelLoadError(f"model file {path!r} is empty: re-save or re-download it")
    lower = path.lower()
    if lower.endswith(".keras"):
        return _load_keras_zip(path)
    if lower.endswith((".h5", ".hdf5")):
        return _load_h5(path)
    if lower.endswith(".tflite"):
        return _load_tflite(path, signature)
    raise ModelLoadError(
        f"model {path!r} has an unknown kind: give a .keras or .h5 file, a SavedModel directory or a .tflite file"
    )


def _damaged(path: str, exc: BaseException) -> ModelLoadError:
    return ModelLoadError(f"model file {path!r} is damaged or unreadable ({first_line(exc, 160)}): re-save it from "
                          "the training code")


def _load_keras_zip(path: str) -> SourceModel:
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("metadata.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise _damaged(path, exc) from None
    if not isinstance(meta, dict):
        raise _damaged(path, ValueError("metadata.json is not a JSON object"))
    major = str(meta.get("keras_version", "3")).split(".")[0]
    return _load_with_keras(path, "tf_keras" if major == "2" else "keras3")


def _load_h5(path: str) -> SourceModel:
    with open(path, "rb") as fh:
        if fh.read(8) != HDF5_MAGIC:
            raise _damaged(path, ValueError("not an HDF5 file"))
    flavour = "keras3"
    try:
        import h5py

        with h5py.File(path, "r") as f:
            version = _text_attr(f.attrs.get("keras_version", b""))
            config = _text_attr(f.attrs.get("model_config", b""))
        if version.startswith("2"):
            flavour = "tf_keras"
    except Exception as exc:  # h5py raises many kinds on damaged files
        raise _damaged(path, exc) from None
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
        raise _damaged(path, exc) from None
    return _from_keras(model, os.path.basename(path), path=path)


def _keras_flavour(obj: Any) -> str | None:
    for cls in type(obj).__mro__:
        module = cls.__module__
        if cls.__name__ == "Model" and module.startswith("tf_keras"):
            return "tf_keras"
        if cls.__name__ == "Model" and module.startswith("keras"):
            return "keras3"
    return None


def _from_keras(model: Any, name: str, path: str | None, input_dtypes: dict[Any, str] | None = None) -> SourceModel:
    flavour = _keras_flavour(model)
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


def _hash_dir(path: str) -> str:
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for fname in sorted(files):
            full = os.path.join(root, fname)
            h.update(os.path.relpath(full, path).encode())
            with open(full, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def _load_saved_model(path: str, signature: str = DEFAULT_SIGNATURE) -> SourceModel:
    tf = tfenv.tensorflow()
    try:
        loaded = tf.saved_model.load(path)
    except Exception as exc:
        raise _damaged(path, exc) from None
    signatures = getattr(loaded, "signatures", {})
    sig = signatures.get(signature)
    if sig is None:
        known = ", ".join(sorted(signatures)) or "none"
        raise ModelLoadError(
            f"SavedModel {path!r} has no {signature!r} signature (it has: {known}): set ini tfopt_signature to one "
            "of them, or export it with model.export(path) or tf.saved_model.save(..., signatures=...)"
        )
    specs = sig.structured_input_signature[1]
    ins = tuple(TensorInfo(k, per_sample(specs[k].shape), dtype_name(specs[k].dtype)) for k in sorted(specs))
    outputs = sig.structured_outputs
    if not isinstance(outputs, dict):
        outputs = {"output_0": outputs}
    outs = tuple(TensorInfo(k, per_sample(outputs[k].shape), dtype_name(outputs[k].dtype)) for k in sorted(outputs))
    if not ins or not outs:
        raise ModelLoadError(f"SavedModel {path!r} signature {signature!r} has no inputs or no outputs: "
                             "export a serving function that takes and returns tensors")
    return SourceModel(
        "saved_model", os.path.basename(os.path.normpath(path)), Signature(ins, outs), _hash_dir(path),
        model=loaded, path=path, signature_key=signature,
    )


def _load_tflite(path: str, signature: str = DEFAULT_SIGNATURE) -> SourceModel:
    with open(path, "rb") as fh:
        content = fh.read()
    try:
        sig, key = inspect_tflite(content, signature)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise _damaged(path, exc) from None
    return SourceModel(
        "tflite", os.path.basename(path), sig, hashlib.sha256(content).hexdigest(),
        path=path, content=content, signature_key=key,
    )
