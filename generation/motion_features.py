"""The motion feature extractor of the evaluation (FID, Diversity): an autoencoding transformer.

No pretrained evaluator of two-hand motion exists (MDM's, Guo et al.'s, embeds body motion),
so one is trained on the training shards, frozen, and stored with a hash of the data it saw:
features of two evaluators trained on different data are not comparable, and ``load_evaluator``
refuses one whose data hash is not the expected one.

Model (``Evaluator``), for joints (B, T, 42, 3) m in the world (T = ``window`` in evaluation)::

    1. x   = canonicalize(joints)              the sequence frame (``generation.representation``,
                                               heading about z): invariant to a rigid motion of
                                               the whole sequence about the vertical
    2. x   = (x.flatten(126) - mean) / std     per-frame, statistics of the training windows (B, T, 126)
    3. h   = Encoder(W_in x + P)               L layers, H heads, feed-forward F         (B, T, d)
    4. z   = W_z mean_t(h)                     the feature, the evaluation embedding     (B, feature_dim)
    5. x^  = W_out Decoder(W_d z + P)          2 layers; P: sinusoidal frame positions    (B, T, 126)
    6. loss = mean |x^ - x|^2                  reconstruction of the normalised joints

Training (``train_evaluator``), seeded (on the CPU the result is deterministic)::

    1. windows of ``window`` frames, every ``stride``, of the ``train`` split
       (``generation.data.WindowDataset``); only those with both hands valid on every frame are
       used (invalid frames hold NaN joints); the data hash of the split (``training_data_hash``)
    2. mean and std of step 2 above from up to ``stats_windows`` of them (``RepStats``)
    3. ``steps`` AdamW steps on random batches of ``batch_size`` windows, loss of step 6
    4. the model, frozen, saved atomically (temp file, then ``os.replace``)

File (``torch.save`` of a dict, written atomically)::

    format      "handdiffuse.evaluator"
    version     1
    config      dict, the EvaluatorConfig fields
    state_dict  the model's weights and normalisation buffers
    data_hash   ``training_data_hash`` of the shards' train split
    created     ISO 8601 UTC time of training
    loss        list of float, the training loss of every step
    windows     number of training windows (both hands valid throughout)
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from data_schemas.atomic import atomic_path
from data_schemas.dataset import dataset_hash
from data_schemas.errors import SchemaError
from data_schemas.keypoints import N_KEYPOINTS
from generation.data import WindowDataset
from generation.denoiser import sinusoid
from generation.device import resolve_device
from generation.representation import RepStats, canonicalize

FORMAT = "handdiffuse.evaluator"
VERSION = 1
FRAME_DIM = N_KEYPOINTS * 3  # 126
DECODER_LAYERS = 2
TRAIN_HINT = "`handdiffuse evaluate` without --evaluator trains one"

log = logging.getLogger(__name__)


@dataclass
class EvaluatorConfig:
    """Sizes and training of the evaluation's feature extractor."""

    window: int = 200
    """Frames of a training window (the evaluation embeds motions of this length)."""
    width: int = 128
    """Transformer width d."""
    layers: int = 4
    """Encoder layers."""
    heads: int = 4
    """Attention heads."""
    feedforward: int = 256
    """Feed-forward width of the encoder and decoder layers."""
    feature_dim: int = 64
    """Size of the feature (the embedding FID and Diversity are computed on)."""
    dropout: float = 0.1
    """Dropout in the transformer layers during training."""
    steps: int = 20000
    """Training steps."""
    batch_size: int = 64
    """Windows per step."""
    lr: float = 1e-4
    """AdamW learning rate."""
    seed: int = 0
    """Seed of the initial weights, the batches and the dropout."""
    stride: int = 10
    """Frames between the starts of consecutive training windows of a sequence."""
    stats_windows: int = 2048
    """Training windows (at most) the normalisation's mean and std are computed from."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu" or "cuda"."""


class Evaluator(nn.Module):
    """Feature extractor (module docstring); ``features`` embeds world-frame joints."""

    def __init__(self, cfg: EvaluatorConfig, data_hash: str = ""):
        super().__init__()
        if cfg.width % 2 or cfg.width % cfg.heads:
            raise ValueError(f"width {cfg.width} must be even and divisible by heads {cfg.heads}")
        self.cfg = cfg
        self.data_hash = data_hash
        self.stats = RepStats(FRAME_DIM)

        def layer() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(cfg.width, cfg.heads, cfg.feedforward, cfg.dropout, batch_first=True)

        self.input = nn.Linear(FRAME_DIM, cfg.width)
        self.encoder = nn.TransformerEncoder(layer(), cfg.layers, enable_nested_tensor=False)
        self.to_feature = nn.Linear(cfg.width, cfg.feature_dim)
        self.from_feature = nn.Linear(cfg.feature_dim, cfg.width)
        self.decoder = nn.TransformerEncoder(layer(), DECODER_LAYERS, enable_nested_tensor=False)
        self.output = nn.Linear(cfg.width, FRAME_DIM)

    def normalized_frames(self, joints: torch.Tensor) -> torch.Tensor:
        """Steps 1-2: (B, T, 42, 3) world joints -> (B, T, 126) normalised, in the sequence frame.
        The sequence frame is computed in float64 so that large world coordinates lose nothing."""
        x, _, _ = canonicalize(joints.to(torch.float64))
        x = x.flatten(2)  # (B, T, 42, 3) -> (B, T, 126)
        return self.stats.normalize(x).to(self.stats.mean.dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 3-4: (B, T, 126) normalised frames -> (B, feature_dim)."""
        positions = sinusoid(torch.arange(x.shape[1], device=x.device), self.cfg.width)  # (T, d)
        h = self.encoder(self.input(x) + positions)  # (B, T, d)
        return self.to_feature(h.mean(dim=1))

    def decode(self, z: torch.Tensor, frames: int) -> torch.Tensor:
        """Step 5: (B, feature_dim) -> (B, frames, 126) normalised frames."""
        positions = sinusoid(torch.arange(frames, device=z.device), self.cfg.width)  # (T, d)
        h = self.from_feature(z)[:, None] + positions  # (B, 1, d) + (T, d) -> (B, T, d)
        return self.output(self.decoder(h))

    def loss(self, joints: torch.Tensor) -> torch.Tensor:
        """Step 6: (B, T, 42, 3) world joints -> reconstruction loss (scalar)."""
        x = self.normalized_frames(joints)
        return torch.mean((self.decode(self.encode(x), x.shape[1]) - x) ** 2)

    def features(self, joints: np.ndarray | torch.Tensor, batch: int = 256) -> np.ndarray:
        """(N, T, 42, 3) world joints, m -> (N, feature_dim) features (eval mode, no gradients)."""
        j = torch.as_tensor(joints)
        if j.ndim != 4 or j.shape[2:] != (N_KEYPOINTS, 3):
            raise ValueError(f"joints must be (N, T, {N_KEYPOINTS}, 3), got {tuple(j.shape)}")
        if not torch.isfinite(j).all():
            raise ValueError("joints are not finite (a window with an invalid hand?)")
        device = self.stats.mean.device
        was_training = self.training
        self.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(j), batch):
                x = self.normalized_frames(j[start:start + batch].to(device))
                out.append(self.encode(x).cpu().numpy())
        self.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, self.cfg.feature_dim), np.float32)


training_data_hash = dataset_hash  # (shards, split) -> sha256 of the split's sorted (name, fingerprint) rows


def _usable_windows(shards: Path, cfg: EvaluatorConfig) -> tuple[WindowDataset, np.ndarray]:
    """The training windows and the indices of those whose frames are all valid on both hands."""
    train = WindowDataset(shards, window=cfg.window, split="train", fields=("joints",), stride=cfg.stride)
    if len(train) == 0:
        raise SchemaError(shards, f"no training window of {cfg.window} frames (no train sequence is that long): "
                                  "use a shorter window or more data")
    usable = train.complete_windows()
    if not len(usable):
        raise SchemaError(shards, f"no training window of {cfg.window} frames has both hands valid throughout: "
                                  "use a shorter window or more data")
    return train, usable


def _batch(train: WindowDataset, indices: np.ndarray) -> torch.Tensor:
    return torch.stack([train[int(i)]["joints"] for i in indices])  # (B, W, 42, 3)


def train_evaluator(shards: Path, out: Path, cfg: EvaluatorConfig) -> Evaluator:
    """Train the evaluator on the train split of the dataset in ``shards`` (module docstring,
    training steps 1-4), save it to ``out`` and return it, frozen (eval mode, no gradients).
    SchemaError naming ``shards`` when no train sequence has a usable window."""
    shards, out = Path(shards), Path(out)
    log.info("evaluator config: %s", cfg)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = np.random.default_rng(cfg.seed)
    # 1. the usable windows, the data hash
    train, usable = _usable_windows(shards, cfg)
    data_hash = training_data_hash(shards, "train")
    # 2. normalisation statistics over (a sample of) the usable windows, in the sequence frame
    model = Evaluator(cfg, data_hash)
    some = usable if len(usable) <= cfg.stats_windows else np.sort(gen.choice(usable, cfg.stats_windows, replace=False))
    frames = []
    for start in range(0, len(some), 256):
        j = _batch(train, some[start:start + 256]).to(torch.float64)
        frames.append(canonicalize(j)[0].flatten(2))  # (B, W, 42, 3) -> (B, W, 126)
    model.stats.load_state_dict(RepStats.fit(frames).state_dict())
    model.to(device).train()
    # 3. the training loop
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    losses: list[float] = []
    for step in range(cfg.steps):
        joints = _batch(train, gen.choice(usable, cfg.batch_size, replace=len(usable) < cfg.batch_size)).to(device)
        loss = model.loss(joints)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 1000 == 0 or step == cfg.steps - 1:
            log.info("evaluator step %d/%d loss %.5f", step + 1, cfg.steps, losses[-1])
    model.eval().requires_grad_(False)
    # 4.
    payload = {
        "format": FORMAT, "version": VERSION, "config": dataclasses.asdict(cfg),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "data_hash": data_hash, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loss": losses, "windows": int(len(usable)),
    }
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    log.info("evaluator: %d usable windows, final loss %.5f -> %s", len(usable),
             losses[-1] if losses else float("nan"), out)
    return model


def load_evaluator(path: Path, expect_data_hash: str | None = None, device: str = "cpu") -> Evaluator:
    """The evaluator saved by ``train_evaluator``, frozen; SchemaError naming ``path`` on a missing
    file, another format or version, or (with ``expect_data_hash``) another training data hash."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(path, f"file not found: {TRAIN_HINT}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not its own
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SchemaError(path, f"not a readable evaluator file ({first}): {TRAIN_HINT}") from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt != FORMAT:
        raise SchemaError(path, f"not a handdiffuse evaluator (format {fmt!r}, expected '{FORMAT}')")
    version = payload.get("version")
    if version != VERSION:
        raise SchemaError(path, f"unknown {FORMAT} format version {version} (this handdiffuse reads version "
                                f"{VERSION}): {TRAIN_HINT}")
    data_hash = str(payload.get("data_hash", ""))
    if expect_data_hash is not None and data_hash != expect_data_hash:
        raise SchemaError(path, f"trained on other data (data hash {data_hash[:12]}, expected "
                                f"{expect_data_hash[:12]}): {TRAIN_HINT} on these shards")
    config = payload.get("config")
    if not isinstance(config, dict) or "state_dict" not in payload:
        raise SchemaError(path, f"no config or no state_dict in the file: {TRAIN_HINT}")
    fields = {f.name for f in dataclasses.fields(EvaluatorConfig)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise SchemaError(path, f"unknown config field '{unknown[0]}': {TRAIN_HINT}")
    model = Evaluator(EvaluatorConfig(**config), data_hash)
    model.load_state_dict(payload["state_dict"])
    return model.to(resolve_device(device)).eval().requires_grad_(False)
