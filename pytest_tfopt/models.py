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
from .errors import ModelLoadError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass(eq=False)
class SourceModel:
    """The FP32 model every variant is built from.

    ``kind`` is ``"keras3"``, ``"tf_keras"``, ``"saved_model"`` or ``"tflite"``;
    ``input_shape`` is the per-sample input shape (``None`` for free axes).
    """

    kind: str
    name: str
    input_shape: tuple[int | None, ...]
    input_dtype: str
    hash: str
    model: Any = None
    path: str | None = None
    content: bytes | None = field(default=None, repr=False)

    def converter(self) -> Any:
        """A fresh ``tf.lite.TFLiteConverter`` for this model."""
        tf = tfenv.tensorflow()
        if self.kind == "saved_model":
            return tf.lite.TFLiteConverter.from_saved_model(self.path, signature_keys=["serving_default"])
        if self.kind == "tflite":
            raise ModelLoadError(
                f"{self.name} is already a .tflite file and cannot be converted again: point tfopt_model "
                "at the Keras or SavedModel source to build other variants"
            )
        model = self.model
        spec = [tf.TensorSpec((None, *self.input_shape), self.input_dtype, name="input")]
        fn = tf.function(lambda x: model(x, training=False), input_signature=spec)
        if self.kind == "keras3":
            # Keras 3 models as the trackable object convert to a graph that outputs NaN (their variables
            # are not tracked the tf.Module way); without one, the converter freezes the captured values
            return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
        return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)

    def check_inputs(self, x: np.ndarray, what: str = "data set") -> None:
        """Raise a :class:`DatasetError` when ``x`` does not fit the model input."""
        check_input_shape(self.input_shape, x, f"{what}", self.name)


def check_input_shape(expected: tuple[int | None, ...], x: np.ndarray, what: str, model: str) -> None:
    """Raise when per-sample shape of ``x`` does not match ``expected`` (``None`` matches anything)."""
    from .errors import DatasetError

    got = tuple(int(d) for d in x.shape[1:])
    fits = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got, strict=False))
    if not fits:
        want = _shape_text(expected)
        hint = ""
        # A reshape only helps when every expected axis is fixed and the sizes agree.
        if expected and None not in expected and int(np.prod(got)) == int(np.prod(expected)):
            hint = f" (same size: x.reshape(-1, {', '.join(str(e) for e in expected)}) would fit)"
        raise DatasetError(
            f"{what} samples have shape {_shape_text(got)} but {model} expects {want}: reshape the data{hint} "
            "or use the matching model"
        )


def _shape_text(shape: tuple[int | None, ...]) -> str:
    """``(8, 8, 1)``, ``(4,)``, ``()``, with ``?`` for free axes."""
    parts = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def load_model(model: Any) -> SourceModel:
    """Load ``model`` (path or in-memory Keras model) as a :class:`SourceModel`."""
    if isinstance(model, SourceModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return _load_path(os.fspath(model))
    if _keras_flavour(model) is not None:
        return _from_keras(model, getattr(model, "name", "model"), path=None)
    raise ModelLoadError(
        f"cannot use a {type(model).__module__}.{type(model).__name__} as a model: give a Keras model, "
        "or a path to a .keras/.h5 file, a SavedModel directory or a .tflite file"
    )


def _load_path(path: str) -> SourceModel:
    if not os.path.exists(path):
        raise ModelLoadError(f"model {path!r} does not exist: check tfopt_model / the path")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ModelLoadError(
                f"directory {path!r} is not a SavedModel (no saved_model.pb): export it with "
                "model.export(path) or tf.saved_model.save"
            )
        return _load_saved_model(path)
    if os.path.getsize(path) == 0:
        raise ModelLoadError(f"model file {path!r} is empty: re-save or re-download it")
    lower = path.lower()
    if lower.endswith(".keras"):
        return _load_keras_zip(path)
    if lower.endswith((".h5", ".hdf5")):
        return _load_h5(path)
    if lower.endswith(".tflite"):
        return _load_tflite(path)
    raise ModelLoadError(
        f"model {path!r} has an unknown kind: give a .keras or .h5 file, a SavedModel directory or a .tflite file"
    )


def _damaged(path: str, exc: BaseException) -> ModelLoadError:
    first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return ModelLoadError(f"model file {path!r} is damaged or unreadable ({first}): re-save it from the training code")


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


def _from_keras(model: Any, name: str, path: str | None) -> SourceModel:
    flavour = _keras_flavour(model)
    try:
        inputs = list(model.inputs or [])  # tf_keras subclassed models have inputs None
    except (AttributeError, ValueError, TypeError):
        inputs = []
    if not inputs:
        raise ModelLoadError(
            f"model {name!r} has no defined inputs: build it with an Input layer, or wrap it as "
            "keras.Model(inp, model(inp)) with inp = keras.Input(shape)"
        )
    if len(inputs) != 1 or len(model.outputs) != 1:
        raise ModelLoadError(
            f"model {name!r} has {len(inputs)} inputs and {len(model.outputs)} outputs: this version "
            "supports single-input, single-output models (wrap the model to expose one of each)"
        )
    shape = tuple(None if d is None else int(d) for d in inputs[0].shape[1:])
    dtype = str(getattr(inputs[0].dtype, "name", inputs[0].dtype))
    return SourceModel(flavour, name, shape, dtype, _hash_keras(model), model=model, path=path)


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


def _load_saved_model(path: str) -> SourceModel:
    tf = tfenv.tensorflow()
    try:
        loaded = tf.saved_model.load(path)
    except Exception as exc:
        raise _damaged(path, exc) from None
    sig = getattr(loaded, "signatures", {}).get("serving_default")
    if sig is None:
        raise ModelLoadError(
            f"SavedModel {path!r} has no 'serving_default' signature: export it with model.export(path) "
            "or tf.saved_model.save(..., signatures=...)"
        )
    specs = list(sig.structured_input_signature[1].values())
    if len(specs) != 1 or len(sig.structured_outputs) != 1:
        raise ModelLoadError(
            f"SavedModel {path!r} serving signature has {len(specs)} inputs and "
            f"{len(sig.structured_outputs)} outputs: this version supports one of each"
        )
    spec = specs[0]
    shape = tuple(None if d is None else int(d) for d in spec.shape[1:])
    return SourceModel(
        "saved_model", os.path.basename(os.path.normpath(path)), shape, spec.dtype.name, _hash_dir(path),
        model=loaded, path=path,
    )


def _load_tflite(path: str) -> SourceModel:
    with open(path, "rb") as fh:
        content = fh.read()
    from .backends.tflite import inspect_tflite

    try:
        shape, dtype = inspect_tflite(content)
    except Exception as exc:
        raise _damaged(path, exc) from None
    return SourceModel(
        "tflite", os.path.basename(path), shape, dtype, hashlib.sha256(content).hexdigest(),
        path=path, content=content,
    )
