"""What a distillation run shows while it trains (progress bar / log lines) and leaves behind (a loss-curve PNG)."""

from __future__ import annotations

import io
import logging
import sys
import time

log = logging.getLogger(__name__)


class Progress:
    """tqdm with loss and tokens/s on a terminal; otherwise a log line at least every `every_s` seconds."""

    def __init__(self, start: int, total: int | None, every_s: float = 10.0, enabled: bool = True) -> None:
        self.total, self.every_s, self.enabled = total, every_s, enabled
        self._last_line = time.monotonic()
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, desc="distill", unit="step", dynamic_ncols=True)

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def update(self, step: int, loss: float, tok_s: float, lr: float) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:.0f}", lr=f"{lr:.2e}", refresh=False)
            self._bar.update(1)
            return
        now = time.monotonic()
        last = self.total is not None and step >= self.total
        if now - self._last_line >= self.every_s or step == 1 or last:
            self._last_line = now
            of = f"/{self.total}" if self.total else ""
            log.info("step %d%s  loss %.4f  %.0f tok/s  lr %.2e", step, of, loss, tok_s, lr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def loss_curve_png(losses: list[tuple[int, float]], title: str) -> bytes:
    """The training loss against the step, as PNG bytes (matplotlib's Agg canvas: no GUI, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if losses:
        steps, vals = zip(*losses, strict=True)
        ax.plot(steps, vals, lw=0.8, alpha=0.5, label="loss per step")
        k = max(1, len(vals) // 50)  # a moving average over ~2% of the run
        if k > 1:
            avg = [sum(vals[max(0, i - k + 1): i + 1]) / len(vals[max(0, i - k + 1): i + 1]) for i in range(len(vals))]
            ax.plot(steps, avg, lw=1.6, label=f"mean of {k}")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("distillation loss (KL, + hidden MSE)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
