"""``make eval-demo``: the paper's Tables 2 and 3 end to end on the demo's dataset, at a tiny budget.

1. the session's dataset (``make eval-demo`` first brings the session through export)
2. one run per named configuration (``generation.model.PRESETS``: the complete HandDiffuse, the
   four ablations of Table 3, the MDM-style baseline), all with the same denoiser size and the
   same training budget, into ``runs/<session>/eval/<preset>``
3. ``evaluate`` on the held-out test split -> ``runs/<session>/eval/evaluation/tables.md`` (printed)

The budget is minutes on a CPU, so the numbers show that the machinery works end to end, not
the paper's findings; ``--steps``, ``--size`` and ``--window`` scale it up (e.g. on a GPU).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import tyro

from generation.denoiser import Size
from pipeline.log import LOG, log_config, setup_logging


@dataclasses.dataclass
class EvalDemoConfig:
    """Train every configuration briefly on a session's dataset and print the evaluation tables."""

    session: Path = Path("sessions/demo")
    """Session whose export/ is the dataset."""
    runs: Path | None = None
    """Folder of the runs (default runs/<session name>/eval)."""
    size: Size = "tiny"
    """Denoiser size of every run."""
    window: int = 16
    """Frames per window and sample."""
    steps: int = 400
    """Training steps per phase (SHDe, IHDe) of every run."""
    batch_size: int = 16
    samples: int = 16
    """Samples per run, condition and repetition."""
    repetitions: int = 2
    ddim_steps: int = 20
    evaluator_steps: int = 400
    """Training steps of the feature extractor."""
    device: str = "auto"


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    cfg = tyro.cli(EvalDemoConfig, args=argv, prog="python -m pipeline.eval_demo")
    log_config("eval-demo", cfg)
    from data_schemas.errors import EXIT_BAD_INPUT, EXIT_OK, SchemaError
    from generation.evaluate import EvaluateOptions, evaluate
    from generation.model import PRESETS
    from generation.train import TrainOptions, train

    shards = cfg.session / "export"
    root = cfg.runs or Path("runs") / cfg.session.name / "eval"
    t0 = time.perf_counter()
    try:
        runs = []
        for preset, model_cfg in PRESETS.items():
            run = root / preset
            opts = TrainOptions(shde_steps=cfg.steps, ihde_steps=cfg.steps, batch_size=cfg.batch_size, lr=1e-3,
                                checkpoint_every=cfg.steps, log_every=max(1, cfg.steps // 20), device=cfg.device,
                                threads=1)
            s = train(shards, run, dataclasses.replace(model_cfg, size=cfg.size, window=cfg.window), opts)
            LOG.info("eval-demo: %s", s.line())
            runs.append(run)
        summary = evaluate(runs, shards, root / "evaluation", EvaluateOptions(
            samples=cfg.samples, repetitions=cfg.repetitions, ddim_steps=cfg.ddim_steps,
            evaluator_steps=cfg.evaluator_steps, real_stride=1, device=cfg.device))
    except SchemaError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print((root / "evaluation" / "tables.md").read_text(encoding="utf-8"))
    print(f"eval-demo: {len(runs)} runs trained and evaluated on {summary['real_windows']} held-out windows in "
          f"{time.perf_counter() - t0:.0f} s -> {root / 'evaluation' / 'tables.md'}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
