"""How Keras models name and take their inputs and outputs (functional list/dict I/O, subclassed models).

Keras 3 keeps a functional model's input/output structure in ``_inputs_struct``/``_outputs_struct``, tf_keras in
``_nested_inputs``/``_nested_outputs``; names are the dict keys, else the ``Input``/output layers' names. A
subclassed Keras 3 model that has been called records its input shapes in its build; its outputs are named by
tracing the call.
"""

from __future__ import annotations

from typing import Any

from . import tfenv
from .errors import ModelLoadError, first_line
from .signature import Signature, TensorInfo, dtype_name


def keras_input_structure(model: Any) -> Any:
    """How a Keras model takes its inputs: a list of names, a dict's names, or one name."""
    struct = structure_of(model, "inputs")
    if isinstance(struct, dict):
        return {k: k for k in struct}
    names = keras_input_names(model)
    if isinstance(struct, (list, tuple)) or len(names) > 1:
        return names
    return names[0]


def structured(feed: dict[str, Any], structure: Any) -> Any:
    if isinstance(structure, dict):
        return {k: feed[k] for k in structure}
    if isinstance(structure, list):
        return [feed[k] for k in structure]
    return feed[structure]


def keras_input_names(model: Any) -> list[str]:
    """Input names in the model's order: dict keys, else the ``Input`` layers' names."""
    struct = structure_of(model, "inputs")
    if isinstance(struct, dict):
        return list(struct)
    names = getattr(model, "input_names", None)  # tf_keras
    if names:
        return list(names)
    return [_tensor_name(t, f"input_{i}") for i, t in enumerate(model.inputs)]


def keras_output_names(model: Any) -> list[str]:
    """Output names in the model's order: dict keys, else the output layers' names."""
    struct = structure_of(model, "outputs")
    if isinstance(struct, dict):
        return list(struct)
    names = getattr(model, "output_names", None)
    if names and len(names) == len(model.outputs):
        return list(names)
    return [_tensor_name(t, f"output_{i}") for i, t in enumerate(model.outputs)]


def structure_of(model: Any, which: str) -> Any:
    """How a functional model nests its ``inputs``/``outputs``: Keras 3 ``_inputs_struct``, tf_keras ``_nested_inputs``."""
    struct = getattr(model, f"_{which}_struct", None)
    return struct if struct is not None else getattr(model, f"_nested_{which}", None)


def _tensor_name(t: Any, default: str) -> str:
    history = getattr(t, "_keras_history", None)
    layer = getattr(history, "operation", None) or getattr(history, "layer", None)
    if layer is None and isinstance(history, tuple) and history:
        layer = history[0]
    return str(getattr(layer, "name", None) or getattr(t, "name", None) or default).split(":")[0]


def keras_outputs(y: Any, names: list[str]) -> dict[str, Any]:
    """A Keras model's call result (tensor, list or dict) as a dict by output name."""
    if isinstance(y, dict):
        return {n: y[n] for n in names}
    if isinstance(y, (list, tuple)):
        return dict(zip(names, y, strict=True))
    return {names[0]: y}


def traced_subclassed(model: Any, name: str, dtypes: dict[Any, str]) -> tuple[Signature, Any] | None:
    """Inputs and outputs of a subclassed Keras 3 model that has been called: shapes from its build, dtypes
    from the data (float32 without), outputs from tracing the call (dict keys, ``output_<i>`` for a list)."""
    shape = (getattr(model, "_build_shapes_dict", None) or {}).get("input_shape")
    if isinstance(shape, dict):
        ins = tuple(TensorInfo(str(k), per_sample(v), dtypes.get(k, "float32")) for k, v in shape.items())
        structure: Any = {t.name: t.name for t in ins}
    elif isinstance(shape, (tuple, list)) and all(d is None or isinstance(d, int) for d in shape):
        ins = (TensorInfo("input", per_sample(shape), dtypes.get(None) or dtypes.get("input", "float32")),)
        structure = "input"
    else:
        return None
    tf = tfenv.tensorflow()
    specs = {t.name: tf.TensorSpec((None, *t.shape), t.dtype, name=t.name) for t in ins}
    try:
        out = tf.function(lambda feed: model(structured(feed, structure), training=False)).get_concrete_function(
            specs).structured_outputs
    except Exception as exc:  # the call rejects these inputs
        raise ModelLoadError(f"subclassed model {name!r} cannot be traced with inputs "
                             f"{', '.join(t.describe() for t in ins)} ({first_line(exc, 120)}): export it "
                             "with model.export(path, input_signature=[...])") from None
    if isinstance(out, dict):
        named = dict(out)
    elif isinstance(out, (list, tuple)):
        named = {f"output_{i}": t for i, t in enumerate(out)}
    else:
        named = {"output_0": out}
    outs = tuple(TensorInfo(k, per_sample(t.shape), dtype_name(t.dtype)) for k, t in named.items())
    return Signature(ins, outs), structure


def inputs_by_name(model: Any, inputs: list[Any], names: list[str]) -> dict[str, Any]:
    struct = structure_of(model, "inputs")
    if isinstance(struct, dict):
        return dict(struct)
    return dict(zip(names, inputs, strict=True))


def per_sample(shape: Any) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in tuple(shape)[1:])
