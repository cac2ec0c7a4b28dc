"""The link-prediction benchmark's table row (`bench/bench_seg.table_row`), from hand-made runs."""

from absl.testing import absltest

from bench import bench_seg


def _run(test, valid, late_tests, seconds):
  """A results.json dict: 10 epochs, evaluations at 2, 4, ..., 10 with `late_tests` at 6-10."""
  history = []
  for epoch in range(1, 11):
    row = {"epoch": epoch, "loss": 0.5, "seconds": seconds[epoch - 1]}
    if epoch % 2 == 0:
      row["test/hits@20"] = 0.0 if epoch <= 5 else late_tests[(epoch - 6) // 2]
      row["valid/hits@20"] = valid
    history.append(row)
  return {"metric": "hits@20", "test/hits@20": test, "valid/hits@20": valid,
          "preprocess_seconds": 2.0, "eval_seconds_mean": 1.0, "peak_rss_mb": 2048.0,
          "history": history}


class TableRowTest(absltest.TestCase):

  def test_columns(self):
    a = _run(0.30, 0.50, [0.20, 0.30, 0.40], [9.0] + [2.0] * 9)  # a slow first epoch
    b = _run(0.40, 0.60, [0.10, 0.20, 0.30], [3.0] * 8 + [100.0] * 2)  # paused at the end
    cells = [c.strip() for c in bench_seg.table_row("ogbl-ddi", "gcn", [a, b]).split("|")[1:-1]]
    self.assertEqual(cells[:4], ["ogbl-ddi", "gcn", "hits@20", "35.00 ± 5.00"])
    self.assertEqual(cells[4], "30.00 / 40.00")
    self.assertEqual(cells[5], "25.00")  # (30 + 20) / 2: epochs 6, 8, 10 only
    self.assertEqual(cells[6:8], ["55.00", "2"])
    self.assertEqual(cells[8:], ["2.0", "2.5", "1.0", "2.00"])  # medians 2 and 3

  def test_late_half_missing(self):
    a = _run(0.30, 0.50, [0.20, 0.30, 0.40], [1.0] * 10)
    a["history"] = [r for r in a["history"] if r["epoch"] <= 5 or "test/hits@20" not in r]
    cells = [c.strip() for c in bench_seg.table_row("cora", "seg", [a]).split("|")[1:-1]]
    self.assertEqual(cells[5], "-")


if __name__ == "__main__":
  absltest.main()
