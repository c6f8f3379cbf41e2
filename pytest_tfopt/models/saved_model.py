"""SavedModel sources: a directory with ``saved_model.pb``, tested through one of its signatures.

Inputs and outputs are the signature's keys, sorted; a signature returning one tensor names it
``output_0``. The hash covers every file of the directory.
"""

from __future__ import annotations

import hashlib
import os

from .. import tfenv
from ..errors import ModelLoadError
from ..keras_io import per_sample
from ..signature import Signature, TensorInfo, dtype_name
from .source import DEFAULT_SIGNATURE, SourceModel, damaged


def load_saved_model(path: str, signature: str = DEFAULT_SIGNATURE) -> SourceModel:
    """The SavedModel directory at ``path``, tested through its ``signature`` (inputs and outputs by key, sorted)."""
    tf = tfenv.tensorflow()
    try:
        loaded = tf.saved_model.load(path)
    except Exception as exc:
        raise damaged(path, exc) from None
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
        "saved_model", os.path.basename(os.path.normpath(path)), Signature(ins, outs), hash_dir(path),
        model=loaded, path=path, signature_key=signature,
    )


def hash_dir(path: str) -> str:
    """sha256 of every file below ``path``: relative names and bytes, in sorted order."""
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
