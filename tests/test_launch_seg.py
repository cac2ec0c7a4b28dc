"""graphs/link_train.py and `python -m launch.seg`: a tiny edge-list run writes results.json,
TensorBoard events and a checkpoint; user mistakes are one clear line."""

import dataclasses
import json
import pathlib

from absl.testing import absltest
import numpy as np

from graphs import link_data
from graphs import link_train
from graphs.errors import GraphError
from tests import testutil
from tests.test_trainer import _event_tags


def write_cliques(path: pathlib.Path, cliques: int = 12, size: int = 6) -> None:
  """An edge-list file of cliques joined in a ring (ids offset by 100: relabelled on load)."""
  lines = ["# cliques"]
  for c in range(cliques):
    base = 100 + c * size
    lines += [f"{base + a} {base + b}" for a in range(size) for b in range(a + 1, size)]
    lines.append(f"{base} {100 + ((c + 1) % cliques) * size + 1}")
  path.write_text("\n".join(lines) + "\n")


class LinkTrainTest(absltest.TestCase):

  def test_seg_and_gcn_runs_write_their_results(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    edges = tmp / "edges.txt"
    write_cliques(edges)
    for model, options in (("seg", dict(gnn="subgraph", batch_size=32, sortpool_k=10, hidden=16,
                                         gnn_hidden=16)),
                           ("gcn", dict(hidden=32, embedding_dim=32, batch_size=256, lr=0.01))):
      out = tmp / model
      cfg = link_train.LinkTrainConfig(dataset=str(edges), model=model, epochs=3, eval_every=2,
                                       model_options=options)
      results = link_train.train_and_evaluate(cfg, str(out))
      on_disk = json.loads((out / "results.json").read_text())
      self.assertEqual(on_disk["test/hits@100"], results["test/hits@100"])
      for key in ("test/hits@10", "test/hits@20", "test/hits@50", "valid/hits@100",
                  "preprocess_seconds", "epoch_seconds_mean",
                  "peak_rss_mb", "num_params", "selected_epoch"):
        self.assertIn(key, on_disk)
      self.assertIn(on_disk["selected_epoch"], (2, 3))  # evaluated at epochs 2 and 3 only
      self.assertEqual([r["epoch"] for r in on_disk["history"] if "test/hits@100" in r], [2, 3])
      tags = _event_tags(out / "tensorboard")
      self.assertEqual(tags["train/loss"], 3)
      self.assertEqual(tags["valid/hits_100"], 2)
      self.assertTrue((out / "checkpoint").is_dir())
      self.assertFalse((out / "results.json.tmp").exists())
      self.assertTrue(0.0 <= results["test/hits@100"] <= 1.0)
    # A second run into the same directory is refused, then replaced with overwrite.
    with self.assertRaisesRegex(GraphError, "already holds a run.*--overwrite"):
      link_train.train_and_evaluate(cfg, str(out))
    again = link_train.train_and_evaluate(dataclasses.replace(cfg, overwrite=True), str(out))
    self.assertEqual(json.loads((out / "results.json").read_text())["seed"], again["seed"])
    self.assertEqual(_event_tags(out / "tensorboard")["train/loss"], 3)  # old events removed

  def test_mrr_negatives_keep_their_shape(self):
    class SumScorer:  # a runner whose score of (u, v) is u + v
      def score(self, state, pairs, name=None):
        del state, name
        return pairs.sum(-1).astype(np.float32)
    pos = np.array([[5, 4], [0, 1]])  # scores 9 and 1
    neg = np.array([[[0, 0], [1, 1]], [[3, 3], [4, 4]]])  # [E=2, K=2, 2]: scores [0, 2], [6, 8]
    split = link_data.LinkSplit(name="ogbl-citation2", num_nodes=10, train_pos=pos,
                                valid_pos=pos, valid_neg=neg, test_pos=pos, test_neg=neg,
                                features=None)
    out = link_train._evaluate(SumScorer(), None, split, "mrr")  # pylint: disable=protected-access
    # Ranks 1 and 3 among each positive's own negatives: MRR = (1 + 1/3) / 2.
    self.assertAlmostEqual(out["valid/mrr"], 2 / 3, places=5)
    self.assertAlmostEqual(out["test/mrr"], 2 / 3, places=5)

  def test_errors(self):
    with self.assertRaisesRegex(GraphError, "unknown model"):
      link_train.LinkTrainConfig(model="node2vec")
    with self.assertRaisesRegex(GraphError, "not an ogbl-\\* name, cora, citeseer"):
      link_train.load_split("no_such_file.txt", "", 0)
    tmp = pathlib.Path(self.create_tempdir().full_path)
    edges = tmp / "e.txt"
    write_cliques(edges)
    split = link_train.load_split(str(edges), "", 0)
    with self.assertRaisesRegex(GraphError, "lam do not apply to model gcn"):
      link_train.make_runner("gcn", split, 0, {"lam": 2})
    self.assertEqual(link_train.main_metric("ogbl-ddi"), "hits@20")
    self.assertEqual(link_train.main_metric("cora"), "hits@100")


class LaunchSegTest(absltest.TestCase):

  def test_cli_run_and_user_errors(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    edges = tmp / "edges.txt"
    write_cliques(edges)
    r = testutil.run_module("launch.seg", f"--dataset={edges}", "--model=seal", "--epochs=1",
                            "--batch_size=32", "--sortpool_k=10", f"--output_dir={tmp / 'run'}")
    self.assertEqual(r.returncode, 0, r.stderr)
    printed = json.loads(r.stdout)
    self.assertEqual(printed["model"], "seal")
    self.assertTrue(np.isfinite(printed["test/hits@100"]))
    self.assertTrue((tmp / "run" / "results.json").is_file())
    # The full-graph SEG's options reach its config.
    r = testutil.run_module("launch.seg", f"--dataset={edges}", "--model=seg", "--epochs=1",
                            "--encoder=sage", "--path_pool=4", "--mask_targets", "--loss=auc",
                            "--num_neg=2", "--ema=0.9", "--hidden=8", "--embedding_dim=8",
                            "--decoder_layers=2", "--neg_sampler=non_edge", "--grad_clip=1.0",
                            f"--output_dir={tmp / 'full'}")
    self.assertEqual(r.returncode, 0, r.stderr)
    runner_cfg = json.loads((tmp / "full" / "results.json").read_text())["config"]["runner"]
    self.assertEqual({k: runner_cfg[k] for k in ("encoder", "path_pool", "mask_targets", "loss",
                                                 "num_neg", "ema", "decoder_layers",
                                                 "neg_sampler", "grad_clip")},
                     {"encoder": "sage", "path_pool": 4, "mask_targets": True, "loss": "auc",
                      "num_neg": 2, "ema": 0.9, "decoder_layers": 2, "neg_sampler": "non_edge",
                      "grad_clip": 1.0})
    # A flag of another model, a missing OGB root, a bad edge-list line.
    testutil.assert_one_line_error(
        self, testutil.run_module("launch.seg", f"--dataset={edges}", "--model=gcn", "--lam=2",
                                  f"--output_dir={tmp / 'x'}"), r"lam do not apply to model gcn")
    testutil.assert_one_line_error(
        self, testutil.run_module("launch.seg", "--dataset=ogbl-ddi", f"--data_root={tmp}",
                                  f"--output_dir={tmp / 'y'}"), r"ogbl")
    bad = tmp / "bad.txt"
    bad.write_text("1 2\n3 x\n")
    testutil.assert_one_line_error(
        self, testutil.run_module("launch.seg", f"--dataset={bad}", f"--output_dir={tmp / 'z'}"),
        r"bad.txt:2")


if __name__ == "__main__":
  absltest.main()
