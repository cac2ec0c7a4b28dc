"""Loss curves as PNG files, drawn with matplotlib's Agg canvas (no display, no pyplot state).

    plot.loss_curve("run/loss_curve.png", [(1, 2.31), (2, 2.20)], eval_loss=[(2, 2.41)])
"""

import pathlib
from typing import Sequence

Points = Sequence[tuple[float, float]]


def loss_curve(path: str | pathlib.Path, train_loss: Points, eval_loss: Points = (), *,
               title: str | None = None, size: tuple[int, int] = (800, 500)) -> pathlib.Path:
  """Writes the training loss (a line) and the eval loss (a line with markers) against step.

  Args:
    path: the PNG file to write (its directory must exist).
    train_loss: `(step, loss)` pairs of the training loss.
    eval_loss: `(step, loss)` pairs of the eval loss; none draws no eval line.
    title: the plot's title (default: none).
    size: `(width, height)` of the image in pixels.

  Returns:
    `path`.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  dpi = 100
  fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  if train_loss:
    steps, values = zip(*train_loss)
    ax.plot(steps, values, color="tab:blue", linewidth=1.2, label="train loss")
  if eval_loss:
    steps, values = zip(*eval_loss)
    ax.plot(steps, values, color="tab:orange", linewidth=1.5, marker="o", markersize=4,
            label="eval loss")
  ax.set_xlabel("step")
  ax.set_ylabel("loss")
  ax.grid(True, alpha=0.3)
  if train_loss or eval_loss:
    ax.legend()
  if title:
    ax.set_title(title)
  fig.tight_layout()
  path = pathlib.Path(path)
  fig.savefig(path, format="png", dpi=dpi)
  return path
