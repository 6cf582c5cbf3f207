"""The dataset as torch sees it: ``WindowDataset`` (map-style) and the batches of training.

``WindowDataset`` is ``data_schemas.dataset.Windows`` (the windows of one split, read through
the dataset module) with each item's arrays as tensors, for ``torch.utils.data.DataLoader``::

    ds = WindowDataset("sessions/demo/export", window=200, split="train")
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=2)

Training draws its batches through the same loader (``window_loader``), with ``StepBatches``
as the batch sampler: step s's batch is drawn by a generator seeded by (seed, s), so a run
killed and resumed sees the same batches as one that went straight through.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch

from data_schemas.dataset import Windows


class WindowDataset(Windows, torch.utils.data.Dataset):
    """Windows of ``window`` frames of the ``split`` sequences of the dataset in ``root``; an item
    is ``Windows``'s with tensors for arrays (``data_schemas.dataset``).

    >>> ds = WindowDataset("sessions/demo/export", window=200, split="train")
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=2)
    """

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {f: torch.from_numpy(a) for f, a in Windows.__getitem__(self, index).items()}


class StepBatches(torch.utils.data.Sampler):
    """Batch sampler of training steps ``start`` ... ``stop - 1``: step s draws ``batch_size``
    items of ``windows`` (with replacement) with a generator seeded by (seed, s), and this rank
    takes its share (``batch_size / world`` of them, in rank order)."""

    def __init__(self, windows: np.ndarray, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world: int = 1):
        self.windows, self.batch_size, self.seed = np.asarray(windows), int(batch_size), int(seed)
        self.start, self.stop, self.rank, self.world = int(start), int(stop), int(rank), int(world)

    def draw(self, step: int) -> tuple[np.ndarray, torch.Generator]:
        """Step ``step``'s items (this rank's share) and its generator after the draw, from which
        the step goes on drawing its diffusion steps and noise."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        pick = torch.randint(len(self.windows), (self.batch_size,), generator=g).numpy()
        per_rank = self.batch_size // self.world
        pick = pick[self.rank * per_rank:(self.rank + 1) * per_rank]  # this rank's share
        return self.windows[pick], g

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.draw(step)[0].tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def window_loader(ds: WindowDataset, batches: Iterable[list[int]], workers: int = 0) -> torch.utils.data.DataLoader:
    """The DataLoader of ``ds`` yielding ``batches`` (lists of item indices) in order, each item field
    stacked (B, ...). Its own generator: making the loader draws nothing from torch's global one."""
    return torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=workers, generator=torch.Generator())
