"""What every metric shares: the registry, a sample-field accessor with clear errors, the result type."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from comm_tower.registry import Registry

Sample = Mapping[str, Any]
Scores = dict[str, float]


class Metric(Protocol):
    """A metric maps scored samples (prediction plus ground-truth fields) to named scores."""

    def __call__(self, samples: Sequence[Sample], **options: Any) -> Scores: ...


METRICS: Registry[Callable[..., Scores]] = Registry("metric")


def get_field(sample: Sample, names: str | tuple[str, ...], index: int, metric: str) -> Any:
    """Return the first of `names` present in `sample`, or raise an error naming the sample and the fix."""
    candidates = (names,) if isinstance(names, str) else names
    for name in candidates:
        if name in sample and sample[name] is not None:
            return sample[name]
    qid = sample.get("question_id", "?")
    wanted = " or ".join(repr(n) for n in candidates)
    raise ValueError(
        f"{metric}: sample {index} (question_id {qid!r}) has no field {wanted}; "
        f"add it to the question file or to the --annotations file"
    )


def prediction_text(sample: Sample, index: int, metric: str) -> str:
    """The model's answer of a sample as a string ('' when the model said nothing)."""
    text = get_field(sample, ("prediction", "text"), index, metric)
    if not isinstance(text, str):
        raise ValueError(f"{metric}: sample {index} prediction must be a string, got {type(text).__name__}")
    return text


def require_samples(samples: Sequence[Sample], metric: str) -> None:
    """Fail early on an empty list rather than dividing by zero."""
    if len(samples) == 0:
        raise ValueError(f"{metric}: no samples to score; is the answers file empty?")
