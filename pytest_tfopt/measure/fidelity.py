"""Label-free fidelity of a variant's outputs against the reference's, on the same inputs.

For users who have inputs but no labels: top-1 agreement, KL divergence, SNR in dB,
cosine similarity and maximum absolute error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

EPS = 1e-6  # probability floor: int8 outputs round small probabilities to exactly 0


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(len(a), -1)


def _is_probabilities(a: np.ndarray) -> bool:
    return bool(np.all(a >= 0) and np.allclose(a.sum(axis=1), 1.0, atol=1e-3))


def _probabilities(a: np.ndarray, probabilities: bool) -> np.ndarray:
    """Floored and renormalized probabilities; logits are softmaxed first."""
    a = _flat(a)
    if not probabilities:
        z = np.exp(a - a.max(axis=1, keepdims=True))
        a = z / z.sum(axis=1, keepdims=True)
    a = np.clip(a, EPS, None)
    return a / a.sum(axis=1, keepdims=True)


def top1_agreement(ref: np.ndarray, out: np.ndarray) -> float:
    """Fraction of samples whose arg-max class is the reference's."""
    return float(np.mean(_flat(ref).argmax(axis=1) == _flat(out).argmax(axis=1)))


def kl_divergence(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean KL(reference ‖ variant) over samples, nats.

    Outputs are probabilities when the reference's rows are (quantized outputs of the
    variant are renormalized), else logits.
    """
    kind = _is_probabilities(_flat(ref))
    p, q = _probabilities(ref, kind), _probabilities(out, kind)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """Signal-to-noise ratio of the variant's outputs, dB (inf when identical)."""
    r, o = _flat(ref), _flat(out)
    noise = float(np.sum((r - o) ** 2))
    return float("inf") if noise == 0 else float(10 * np.log10(max(float(np.sum(r**2)), EPS) / noise))


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean per-sample cosine similarity."""
    r, o = _flat(ref), _flat(out)
    num = np.sum(r * o, axis=1)
    den = np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1), EPS)
    return float(np.mean(num / den))


def max_abs_error(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.max(np.abs(_flat(ref) - _flat(out))))


def mean_abs_error(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.mean(np.abs(_flat(ref) - _flat(out))))


@dataclass(frozen=True)
class FidelityMetric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool


METRICS = {
    "top1_agreement": FidelityMetric("top1_agreement", top1_agreement, True),
    "kl_divergence": FidelityMetric("kl_divergence", kl_divergence, False),
    "snr_db": FidelityMetric("snr_db", snr_db, True),
    "cosine": FidelityMetric("cosine", cosine, True),
    "max_abs_error": FidelityMetric("max_abs_error", max_abs_error, False),
}


def resolve(name: str) -> FidelityMetric:
    if name not in METRICS:
        raise UsageError(f"unknown fidelity metric {name!r}: use one of {', '.join(METRICS)}")
    return METRICS[name]


def all_metrics(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Every fidelity metric at once (for reports)."""
    return {name: m.fn(ref, out) for name, m in METRICS.items()}
