"""The main job (`launch.demo`) end to end at a tiny size, and its output-directory rules."""

import json
import pathlib

from absl.testing import absltest

from tests import testutil


class DemoTest(absltest.TestCase):

  def test_tiny_run_scores_trains_rescores_and_refuses_to_overwrite(self):
    testutil.require_default_model()
    out = pathlib.Path(self.create_tempdir().full_path) / "demo"
    args = ("--train_rows=3", "--eval_rows=1", "--max_new_tokens=4", "--max_steps=2",
            "--max_length=1024", f"--output_dir={out}")
    r = testutil.run_module("launch.demo", *args, timeout=900)
    self.assertEqual(r.returncode, 0, r.stderr[-3000:])
    self.assertRegex(r.stdout, r"base SmolLM2-135M( +-?\d+\.\d){5}")
    self.assertRegex(r.stdout, r"\+ LoRA \(react\)( +-?\d+\.\d){5}")
    self.assertIn("LoRA SFT: 2 steps", r.stdout)
    result = json.loads((out / "demo.json").read_text())
    n_turns = len(result["turns"])
    self.assertGreaterEqual(n_turns, 1)
    for side in ("base", "tuned"):
      self.assertEqual(result[side]["n"] + result[side]["skipped"], n_turns)
    self.assertTrue((out / "run" / "adapter" / "adapter_config.json").is_file())
    self.assertLen((out / "data" / "train.jsonl").read_text().splitlines(), 3)
    # Held-out turns only: every scored turn's tools are test tools.
    meta = json.loads((out / "data" / "tools.json").read_text())
    test_rows = [json.loads(x) for x in (out / "data" / "test.jsonl").read_text().splitlines()]
    offered = {t["function"]["name"] for row in test_rows for t in row["tools"]}
    self.assertLessEqual(offered, set(meta["test"]))

    # A second run without --overwrite is refused before any work; a foreign file too.
    again = testutil.run_module("launch.demo", *args)
    testutil.assert_one_line_error(self, again, r"^error: --output_dir .* holds an earlier demo")
    (out / "notes.txt").write_text("mine")
    again = testutil.run_module("launch.demo", *args, "--overwrite")
    testutil.assert_one_line_error(self, again, r"^error: --output_dir .* did not write "
                                   r"\(notes\.txt\)")
    self.assertTrue((out / "demo.json").is_file())  # nothing was removed


if __name__ == "__main__":
  absltest.main()
