"""Training the generator: SHDe first, then SHDe frozen and IHDe; the loop written out in ``train``.

A run folder (``runs/<name>``)::

    runs/<name>/
      run.json          the resolved model + training configuration, the data it trained on
      checkpoint.pt     the latest state (model, optimiser, step), rewritten atomically every
                        ``checkpoint_every`` steps: a killed run resumes from it, given the same
                        model, data and training options (``RESUME_OPTIONS``); others are refused
      model.pt          the trained generator (format "handdiffuse.model"), written at the end
      loss.jsonl        one line per ``log_every`` steps: step, phase, loss terms
      loss.png          the loss curves, redrawn at every checkpoint

Per step s (0 ... shde_steps + ihde_steps - 1):

    1. phase = SHDe while s < shde_steps, then IHDe (SHDe frozen from then on)
    2. a batch of windows drawn with a generator seeded by (seed, s): the same batch, diffusion
       steps and noise whether the run went straight through or was killed and resumed. The
       batches come through the dataset's DataLoader (``generation.data``: ``WindowDataset``
       with ``StepBatches`` as its batch sampler)
    3. features: ``HandDiffuse.encode`` (sequence frame, representations), no gradient
    4. t ~ U{0 ... T - 1}, noise ~ N(0, I); the phase's losses (``generation.model``)
    5. AdamW step with the gradient norm clipped at ``clip``
    6. every ``checkpoint_every`` steps and at the end: checkpoint.pt, loss.png

Several GPUs (or processes): ``torchrun --nproc-per-node N -m -- pipeline.cli train ...`` (the
``--`` keeps torchrun from reading ``--run`` as its own ``--run-path``);
each rank takes its share of every step's batch, gradients are averaged by
DistributedDataParallel (NCCL on CUDA, gloo on CPU), rank 0 alone writes.
Normalisation statistics are fitted once, before step 0, on up to ``stats_windows`` windows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import io
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data_schemas.atomic import atomic_path, atomic_write_bytes, atomic_write_text, cannot_write
from data_schemas.dataset import MIN_CONFIDENCE, dataset_hash
from data_schemas.errors import SchemaError
from data_schemas.lock import writing
from data_schemas.manifest import manifest_path
from generation.data import StepBatches, WindowDataset, window_loader
from generation.device import resolve_device
from generation.model import HandDiffuse, HandDiffuseConfig, config_from_dict

LOG = logging.getLogger("handdiffuse")
CHECKPOINT, MODEL, RUN_JSON, LOSS_LOG, LOSS_PNG = "checkpoint.pt", "model.pt", "run.json", "loss.jsonl", "loss.png"
# Training options that change the model a run ends with: a checkpoint keeps them and a resumed run must
# have the same. Not ihde_steps (raised to go on), nor the device, threads, checkpoint or log intervals.
RESUME_OPTIONS = ("batch_size", "lr", "weight_decay", "clip", "seed", "stats_windows", "min_confidence")
RUN_FORMAT, MODEL_FORMAT, VERSION = "handdiffuse.run", "handdiffuse.model", 1
FIELDS = ("joints", "global_orient", "hand_pose")


@dataclass
class TrainOptions:
    """How long and how to train."""

    shde_steps: int = 20000
    """Steps of the single-hand denoiser (first phase; 0 for a model without SHDe)."""
    ihde_steps: int = 40000
    """Steps of the interacting-hands denoiser (second phase, SHDe frozen). May be raised to
    continue a finished run."""
    batch_size: int = 64
    """Windows per step (over all ranks)."""
    lr: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    clip: float = 1.0
    """Gradient norm clip."""
    seed: int = 0
    """Seed of the initial weights, the batches, the diffusion steps and noise, the dropout."""
    device: str = "auto"
    """"auto" (CUDA when present), "cpu", "cuda", "cuda:1" ..."""
    checkpoint_every: int = 500
    """Steps between checkpoints (and loss plots)."""
    log_every: int = 50
    """Steps between loss.jsonl lines."""
    stats_windows: int = 4096
    """Windows the normalisation statistics are fitted on."""
    min_confidence: float = MIN_CONFIDENCE
    """Train on the windows whose every frame has both hands at least this trusted (the shards'
    confidence; 0: every estimate, hands carried across missing evidence included)."""
    threads: int = 0
    """CPU threads of torch (0: torch's default)."""


@dataclass
class TrainSummary:
    run: Path
    steps: int
    resumed_from: int
    seconds: float
    windows: int
    last: dict = field(default_factory=dict)

    def line(self) -> str:
        terms = " ".join(f"{k}={v:.4g}" for k, v in self.last.items())
        return (f"train: {self.run} step {self.steps} (resumed from {self.resumed_from}), {self.windows} training "
                f"windows, {self.seconds:.1f} s; last losses {terms}")


@dataclass
class _Ranks:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> tuple[_Ranks, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Ranks(), resolve_device(device_name)
    ranks = _Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def _on(device: torch.device, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f: batch[f].to(device) for f in FIELDS}


def fit_statistics(model: HandDiffuse, ds: WindowDataset, windows: np.ndarray, n: int, seed: int,
                   device: torch.device) -> None:
    """Normalisation statistics of both feature spaces from up to ``n`` training windows."""
    from generation.representation import RepStats

    rng = np.random.default_rng(seed)
    pick = windows if len(windows) <= n else rng.choice(windows, n, replace=False)
    xs, hs = [], []
    chunks = [chunk.tolist() for chunk in np.array_split(pick, max(1, len(pick) // 64))]
    with torch.no_grad():
        for batch in window_loader(ds, chunks):
            b = _on(device, batch)
            enc = model.encode(b["joints"], b["global_orient"], b["hand_pose"])
            xs.append(enc.x)
            hs.append(enc.hands.flatten(0, 1))
    model.stats.load_state_dict(RepStats.fit(xs).state_dict())
    model.hand_stats.load_state_dict(RepStats.fit(hs).state_dict())


def _plot(run: Path, log_lines: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for phase, color in (("shde", "tab:blue"), ("ihde", "tab:orange")):
        rows = [r for r in log_lines if r["phase"] == phase]
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["total"] for r in rows], color=color, label=f"{phase.upper()} total")
        for term, style in (("contact", ":"), ("shape", "--")):
            if term in rows[0]:
                ax.plot(steps, [r[term] for r in rows], color=color, ls=style, label=f"{phase.upper()} {term}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(run.name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(run / LOSS_PNG) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _read_log(path: Path, upto: int) -> list[dict]:
    """loss.jsonl lines up to step ``upto`` (a killed run may have logged past its checkpoint)."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i + 1 < len(lines):  # only the last line can be cut short by a kill
                raise SchemaError(path, f"line {i + 1} is not JSON") from None
    return [r for r in rows if r["step"] < upto]


def save_model(model: HandDiffuse, path: Path, data_hash: str, steps: int) -> None:
    payload = {"format": MODEL_FORMAT, "version": VERSION, "config": dataclasses.asdict(model.cfg),
               "model": model.state_dict(), "data_hash": data_hash, "steps": steps,
               "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    save_payload(payload, path)


def save_payload(payload: dict, path: Path) -> None:
    """torch.save through memory, then one Python write: torch reports a failed write (full disk)
    as a RuntimeError naming neither the file nor the cause; Python's OSError ``atomic_path`` words."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getbuffer())


def load_model(path: str | Path, device: str | torch.device = "cpu") -> HandDiffuse:
    """A trained generator (``model.pt`` of a run, or the run folder itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL
    if not path.is_file():
        hint = " (training has not finished: rerun `handdiffuse train` to resume it)" \
            if (path.parent / CHECKPOINT).is_file() else " (train one with `handdiffuse train`)"
        raise SchemaError(path, f"no trained model{hint}")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise SchemaError(path, f"not a readable model file ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise SchemaError(path, f"not a HandDiffuse model (format {payload.get('format') if isinstance(payload, dict) else None!r})")
    if payload.get("version") != VERSION:
        raise SchemaError(path, f"model format version {payload.get('version')} is not supported (this version reads "
                                f"{VERSION}): retrain with `handdiffuse train`")
    model = HandDiffuse(config_from_dict(payload["config"]))
    model.load_state_dict(payload["model"])
    model.data_hash = payload.get("data_hash", "")
    return model.to(device).eval()


def train(shards: Path, run: Path, model_cfg: HandDiffuseConfig, opts: TrainOptions) -> TrainSummary:
    """Train (or resume) the run in ``run`` on the train split of the dataset ``shards``; the run
    folder is locked while it trains (by the writing process, rank 0 under torchrun)."""
    main = int(os.environ.get("RANK", "0")) == 0
    with writing(run, "train") if main else contextlib.nullcontext():
        return _train(Path(shards), Path(run), model_cfg, opts)


def _train(shards: Path, run: Path, model_cfg: HandDiffuseConfig, opts: TrainOptions) -> TrainSummary:
    t_start = time.perf_counter()
    ranks, device = _init_distributed(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    shde_steps = _checked_shde_steps(model_cfg, opts, ranks)
    total = shde_steps + opts.ihde_steps

    ds = WindowDataset(shards, window=model_cfg.window, split="train", fields=FIELDS)
    windows = ds.complete_windows(opts.min_confidence)
    if not len(windows):
        raise SchemaError(manifest_path(shards), f"no {model_cfg.window}-frame window of the train split has both "
                                                 f"hands valid and of confidence >= {opts.min_confidence} in every "
                                                 "frame (lower --window or --min-confidence, or export more data)")
    data_hash = dataset_hash(shards, "train")
    torch.manual_seed(opts.seed)  # the initial weights
    model = HandDiffuse(model_cfg).to(device)
    run_info = {"format": RUN_FORMAT, "version": VERSION, "model": dataclasses.asdict(model_cfg),
                "shde_steps": shde_steps, "shards": str(shards.resolve()), "data_hash": data_hash,
                "fps": float(np.median(ds.rows["fps"]))}  # of the training data: the samples'

    # resume
    ckpt_path = run / CHECKPOINT
    ckpt = _checkpoint_to_resume(ckpt_path, run_info, shards, opts, device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        start, phase_opt = int(ckpt["step"]), ckpt["optimizer"]
    else:
        start, phase_opt = 0, None
        fit_statistics(model, ds, windows, opts.stats_windows, opts.seed, device)
    if ranks.main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / RUN_JSON, json.dumps({**run_info, "train": {f.name: getattr(opts, f.name) for f in dataclasses.fields(TrainOptions)}}, indent=2) + "\n")
    log_lines = _read_log(run / LOSS_LOG, start) if ranks.main else []
    if ranks.main and start:
        atomic_write_text(run / LOSS_LOG, "".join(json.dumps(r) + "\n" for r in log_lines))
    LOG.info("train: %d training windows of %d frames; steps %d SHDe + %d IHDe on %s%s%s", len(windows),
             model_cfg.window, shde_steps, opts.ihde_steps, device,
             f" x {ranks.world} processes" if ranks.world > 1 else "", f"; resuming at step {start}" if start else "")

    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not (ranks.main and sys.stderr.isatty()))
    per_rank = opts.batch_size // ranks.world
    batches = StepBatches(windows, opts.batch_size, opts.seed, start, total, ranks.rank, ranks.world)
    loader = iter(window_loader(ds, batches))
    optimizer, net, phase, last = None, None, None, {}
    with open(run / LOSS_LOG, "a", encoding="utf-8") if ranks.main else open(os.devnull, "w") as log_file:
        for step in range(start, total):
            # 1.
            step_phase = "shde" if step < shde_steps else "ihde"
            if step_phase != phase:
                phase = step_phase
                net, optimizer = _enter_phase(model, phase, phase_opt, ranks, device, opts)
                phase_opt = None
            # 2.
            b = _on(device, next(loader))  # this rank's share of the step's batch
            _, g = batches.draw(step)  # the step's generator, after the batch: diffusion steps and noise follow
            # 3.
            with torch.no_grad():
                enc = model.encode(b["joints"], b["global_orient"], b["hand_pose"])
            # 4.
            torch.manual_seed(opts.seed * 7_919 + step)  # dropout
            losses = _phase_losses(model, net, phase, enc, g, opts.batch_size, ranks, device)
            # 5.
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), opts.clip)
            optimizer.step()
            if not np.isfinite(losses.terms["rec"]):
                raise FloatingPointError(f"train: loss is {losses.terms['rec']} at step {step}; lower --lr")
            last = {"total": losses.terms.get("total", losses.terms["rec"]), **losses.terms}
            if ranks.main and (step % opts.log_every == 0 or step + 1 == total):
                row = {"step": step, "phase": phase, **last}
                log_lines.append(row)
                _write_log_line(log_file, row, run / LOSS_LOG)
                bar.set_postfix_str(f"{phase} {last['total']:.4f}")
                if bar.disable:
                    LOG.info("train: step %d/%d %s loss %.4f", step + 1, total, phase, last["total"])
            bar.update(1)
            # 6.
            if ((step + 1) % opts.checkpoint_every == 0 or step + 1 == total) and ranks.main:
                payload = {"format": RUN_FORMAT, "version": VERSION, "model_config": run_info["model"],
                           "shde_steps": shde_steps, "data_hash": data_hash, "step": step + 1,
                           "train": {name: getattr(opts, name) for name in RESUME_OPTIONS},
                           "model": model.state_dict(), "optimizer": {"phase": phase, "state": optimizer.state_dict()}}
                save_payload(payload, ckpt_path)
                _plot(run, log_lines)
    bar.close()
    if ranks.main:
        if start < total or not (run / MODEL).is_file():
            save_model(model.eval(), run / MODEL, data_hash, total)
            _plot(run, log_lines)
    if ranks.world > 1:
        torch.distributed.barrier()
    return TrainSummary(run=run, steps=total, resumed_from=start, seconds=time.perf_counter() - t_start,
                        windows=len(windows), last=last)


def _checked_shde_steps(model_cfg: HandDiffuseConfig, opts: TrainOptions, ranks: _Ranks) -> int:
    """The SHDe steps the run takes (none for a model without SHDe), once the options are sound."""
    for name in ("shde_steps", "ihde_steps", "batch_size", "checkpoint_every", "log_every"):
        if getattr(opts, name) < (1 if name not in ("shde_steps", "ihde_steps") else 0):
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(opts, name)}")
    if opts.batch_size % ranks.world:
        raise ValueError(f"--batch-size {opts.batch_size} must be a multiple of the {ranks.world} processes")
    shde_steps = opts.shde_steps if model_cfg.shde else 0
    if shde_steps + opts.ihde_steps < 1:
        raise ValueError("nothing to train: --shde-steps and --ihde-steps are both 0")
    return shde_steps


def _checkpoint_to_resume(ckpt_path: Path, run_info: dict, shards: Path, opts: TrainOptions,
                          device: torch.device) -> dict | None:
    """The run's checkpoint (None when there is none yet), refused when the run it belongs to was
    started with another model, SHDe steps, data or training options (``RESUME_OPTIONS``)."""
    if not ckpt_path.is_file():
        return None
    try:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
    except Exception as e:
        raise SchemaError(ckpt_path, f"unreadable checkpoint ({type(e).__name__}); delete it to start over") from None
    if ckpt.get("format") != RUN_FORMAT or ckpt.get("version") != VERSION:
        raise SchemaError(ckpt_path, "not a checkpoint of this version; delete the run folder to start over")
    if ckpt["model_config"] != run_info["model"]:
        raise SchemaError(ckpt_path, "the run was started with another model configuration; use a new --run")
    if ckpt["shde_steps"] != run_info["shde_steps"]:
        raise SchemaError(ckpt_path, f"the run was started with --shde-steps {ckpt['shde_steps']}; keep it")
    if ckpt["data_hash"] != run_info["data_hash"]:
        raise SchemaError(ckpt_path, f"the run was started on other data than {shards}'s train split; use a new --run")
    for name, old in ckpt.get("train", {}).items():  # checkpoints of before they kept them: not checked
        if old != getattr(opts, name):
            raise SchemaError(ckpt_path, f"the run was started with --{name.replace('_', '-')} {old}, not "
                                         f"{getattr(opts, name)}: resume it with the same option, or use a new --run")
    return ckpt


def _enter_phase(model: HandDiffuse, phase: str, saved: dict | None, ranks: _Ranks, device: torch.device,
                 opts: TrainOptions) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Step 1: the phase's denoiser in training mode (SHDe frozen from the IHDe phase on), wrapped
    for DDP over several processes, and its optimiser, with the ``saved`` state of a checkpoint
    taken in this phase."""
    module = model.shde if phase == "shde" else model.ihde
    if phase == "ihde" and model.shde is not None:
        model.shde.requires_grad_(False).eval()
    module.train()
    net = module
    if ranks.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(module.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    if saved is not None and saved["phase"] == phase:
        optimizer.load_state_dict(saved["state"])
    return net, optimizer


def _phase_losses(model: HandDiffuse, net: torch.nn.Module, phase: str, enc, g: torch.Generator, batch_size: int,
                  ranks: _Ranks, device: torch.device):
    """Step 4: t ~ U{0 ... T - 1} and the noise, drawn with ``g`` for the whole batch and then
    this rank's share (any number of ranks sees the same numbers), and the phase's losses."""
    per_rank = batch_size // ranks.world
    T, B, mine = model.schedule.steps, batch_size, slice(ranks.rank * per_rank, (ranks.rank + 1) * per_rank)
    if phase == "shde":
        hands = slice(2 * mine.start, 2 * mine.stop)  # both hands of each of this rank's windows
        t = torch.randint(T, (2 * B,), generator=g)[hands]
        noise = torch.randn((2 * B,) + enc.hands.shape[2:], generator=g)[hands]
        return model.shde_losses(enc, t.to(device), noise.to(device), net=net)
    t = torch.randint(T, (B,), generator=g)[mine]
    noise = torch.randn((B,) + enc.x.shape[1:], generator=g)[mine]
    cond_noise = torch.randn((B, enc.x.shape[1], enc.hands.shape[1] * enc.hands.shape[-1]), generator=g)[mine]
    return model.ihde_losses(enc, t.to(device), noise.to(device), cond_noise.to(device), net=net)


def _write_log_line(log_file, row: dict, path: Path) -> None:
    """One loss.jsonl line, flushed (a killed run keeps what it logged); a failed write said as one line."""
    try:
        log_file.write(json.dumps(row) + "\n")
        log_file.flush()
    except OSError as e:
        raise cannot_write(path, e) from None
