"""Length grouping by modality (the idea of LLaVA's --group_by_modality_length, written afresh).

Samples with images (positive lengths) and text-only samples (negative lengths) are shuffled apart and
cut into global batches (`batch_size * world_size` samples) of one modality each; inside a global batch the
samples are sorted by length and dealt to the ranks so each rank gets similar lengths. Global batches
are then shuffled, except that the leftovers of both modalities form one mixed batch served last.
With `group_batches > 1`, that many global batches of one modality are sorted by length together before
they are cut, so each batch holds samples of similar length (less padding) and the batch order stays random.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def _global_batches(
    indices: list[int], lengths: list[int], size: int, world: int, group: int = 1
) -> list[list[int]]:
    """Cut `indices` (already shuffled) into batches of `size * world`, each sorted so ranks match; every
    `group` consecutive batches are first sorted by length together."""
    step = size * world
    out = []
    for start in range(0, len(indices), step * group):
        pool = sorted(indices[start : start + step * group], key=lambda i: abs(lengths[i]), reverse=True)
        for cut in range(0, len(pool), step):
            chunk = pool[cut : cut + step]
            # deal longest-first round-robin, so rank r gets chunk[r], chunk[r + world], ...
            out.append(
                [
                    chunk[r + world * k]
                    for r in range(world)
                    for k in range(size)
                    if r + world * k < len(chunk)
                ]
            )
    return out


def modality_grouped_indices(
    lengths: list[int],
    batch_size: int,
    world_size: int = 1,
    generator: torch.Generator | None = None,
    group_batches: int = 1,
) -> list[int]:
    """A permutation of range(len(lengths)) where each global batch holds one modality (but one mixed)."""
    if group_batches < 1:
        raise ValueError(f"group_batches must be >= 1, got {group_batches}")
    if any(v == 0 for v in lengths):
        raise ValueError("a modality length of 0 has no sign; give empty samples a length of at least 1")
    order = torch.randperm(len(lengths), generator=generator).tolist()
    image = [i for i in order if lengths[i] > 0]
    text = [i for i in order if lengths[i] < 0]
    step = batch_size * world_size
    batches = []
    leftovers: list[int] = []
    for group in (image, text):
        full = len(group) - len(group) % step
        batches += _global_batches(group[:full], lengths, batch_size, world_size, group_batches)
        leftovers += group[full:]
    perm = torch.randperm(len(batches), generator=generator).tolist()
    ordered = [batches[p] for p in perm]
    if leftovers:
        ordered += _global_batches(leftovers, lengths, batch_size, world_size)
    return [i for batch in ordered for i in batch]


class ModalityLengthGroupedSampler(Sampler[int]):
    """Yields indices grouped by modality and length; a new order every epoch from `seed + epoch`."""

    def __init__(
        self, lengths: list[int], batch_size: int, world_size: int = 1, seed: int = 0, group_batches: int = 1
    ) -> None:
        if group_batches < 1:
            raise ValueError(f"group_batches must be >= 1, got {group_batches}")
        self.lengths = list(lengths)
        self.group_batches = group_batches
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Pick the epoch whose order the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = modality_grouped_indices(
            self.lengths, self.batch_size, self.world_size, gen, self.group_batches
        )
        return iter(order)
