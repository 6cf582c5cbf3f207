"""The dataset as torch sees it: ``WindowDataset`` (map-style).

``WindowDataset`` is ``data_schemas.dataset.Windows`` (the windows of one split, read through
the dataset module) with each item's arrays as tensors, for ``torch.utils.data.DataLoader``::

    ds = WindowDataset("sessions/demo/export", window=200, split="train")
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=2)
"""

from __future__ import annotations

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
