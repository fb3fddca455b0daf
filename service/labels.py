"""Class labels for conditional generators: what a request asked for, and the one-hot the graph takes.

A conditional generator's graph takes one float32 row per image: the latent vector followed by the
class as a one-hot vector (`ModelCard.condition`). A request names one class for every image
(`label`), one per image (`labels`), or none: then the images are spread evenly over the classes in
contiguous blocks, `labels[i] = i * classes // n`, so a grid of `n = k * classes` images shows one
class per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.card import Condition, ModelCard
from service.errors import InvalidLabel


def spread_labels(n: int, classes: int) -> np.ndarray:
    """`n` labels spread evenly over `classes` in contiguous ascending blocks: `i * classes // n`."""
    return (np.arange(n, dtype=np.int64) * classes // n).astype(np.int64)


def resolve_labels(
    card: ModelCard, label: int | str | None, labels: Sequence[int | str] | np.ndarray | None, n: int
) -> np.ndarray | None:
    """The (n,) label indices a request asks of `card`; None for an unconditional model."""
    condition = card.condition
    if condition is None:
        if label is not None or labels is not None:
            given = "label" if label is not None else "labels"
            raise InvalidLabel(
                f"model {card.name} is not conditional: it takes no class; leave out {given} "
                "(GET /models lists each conditional model's classes)"
            )
        return None
    if label is not None and labels is not None:
        raise InvalidLabel("give either label (one class for all images) or labels (one per image), not both")
    if labels is not None and len(labels) != n:
        raise InvalidLabel(f"{len(labels)} labels were given for {n} images; give one label per image")
    if label is not None:
        return np.full(n, _index(condition, label), np.int64)
    if labels is not None:
        return np.array(
            [_index(condition, value, f"labels[{i}]") for i, value in enumerate(labels)], np.int64
        )
    return spread_labels(n, condition.classes)


def _index(condition: Condition, value: int | str, where: str | None = None) -> int:
    try:
        return condition.label_of(value)
    except ValueError as exc:
        raise InvalidLabel(f"{where}: {exc}" if where else str(exc)) from None


def generator_input(latents: np.ndarray, labels: np.ndarray | None, card: ModelCard) -> np.ndarray:
    """The graph's input rows: `latents`, followed by each label's one-hot vector when conditional."""
    if labels is None or card.condition is None:
        return latents
    one_hot = np.zeros((latents.shape[0], card.condition.classes), np.float32)
    one_hot[np.arange(latents.shape[0]), labels] = 1.0
    return np.concatenate([latents, one_hot], axis=1)


def generator_input_width(card: ModelCard) -> int:
    """Values per input row of a generator's graph: the latent size, plus the classes when conditional."""
    assert card.latent_size is not None
    return card.latent_size + (card.condition.classes if card.condition else 0)
