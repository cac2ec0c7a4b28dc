"""launch/ conventions: absl flags, --helpfull, one clear line for user mistakes."""

import pathlib
import subprocess
import sys

from absl.testing import absltest
import pytest

from tests import testutil


class LaunchInferTest(absltest.TestCase):

  def _refused(self, r, pattern):
    # absl's own flag errors exit with 1 and add a "Pass --helpshort" line.
    testutil.assert_one_line_error(self, r, pattern, returncode=None, max_lines=2)

  def test_helpfull_lists_flags(self):
    r = testutil.run_module("launch.infer", "--helpfull")
    self.assertEqual(r.returncode, 0, r.stderr)
    for flag in ("--model", "--prompt", "--max_new_tokens", "--temperature", "--top_k", "--top_p",
                 "--repetition_penalty", "--[no]stream"):
      self.assertIn(flag, r.stdout)

  def test_bad_flag_value(self):
    self._refused(testutil.run_module("launch.infer", "--max_new_tokens=abc"),
                                r"--max_new_tokens=abc")

  def test_out_of_range_flag(self):
    self._refused(testutil.run_module("launch.infer", "--top_p=2"), r"--top_p")

  def test_missing_model_file(self):
    r = testutil.run_module("launch.infer", "--model=/nonexistent/model.gguf")
    self._refused(r, r"^error: GGUF file /nonexistent/model\.gguf does not exist")
    self.assertEqual(r.returncode, 2)

  def test_mesh_that_does_not_fit(self):
    r = testutil.run_module("launch.infer", "--mesh_tensor=3")
    self._refused(r, r"^error: 1 devices do not divide into mesh")

  def test_stray_positional_argument(self):
    r = testutil.run_module("launch.infer", "hello")
    self._refused(r, r"unexpected positional arguments")

  def test_directory_without_tokenizer(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    testutil.save_tiny_llama(tmp)
    r = testutil.run_module("launch.infer", f"--model={tmp}")
    self._refused(r, rf"error: {tmp} has no tokenizer files")

  def test_tiny_local_model_answers(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    testutil.save_tiny_llama(tmp)
    testutil.save_tiny_tokenizer(tmp)
    r = testutil.run_module("launch.infer", f"--model={tmp}", "--prompt=the cat",
                            "--max_new_tokens=5", "--temperature=0.8", "--top_k=20")
    self.assertEqual(r.returncode, 0, r.stderr)
    self.assertNotIn("Traceback", r.stderr)
    self.assertTrue(r.stdout.strip(), "no answer printed")


@pytest.mark.slow
class LaunchDemoTest(absltest.TestCase):

  def test_default_model_answers(self):
    testutil.require_default_model()
    r = testutil.run_module("launch.infer", "--prompt=What is the capital of France?")
    self.assertEqual(r.returncode, 0, r.stderr)
    self.assertIn("Paris", r.stdout)
    self.assertNotIn("Traceback", r.stderr)


if __name__ == "__main__":
  absltest.main()


class LaunchSftTest(absltest.TestCase):

  def test_tiny_run_and_user_errors(self):
    import json  # pylint: disable=g-import-not-at-top
    tmp = pathlib.Path(self.create_tempdir().full_path)
    testutil.save_tiny_llama(tmp / "m")
    testutil.save_tiny_tokenizer(tmp / "m")
    data = tmp / "d.jsonl"
    data.write_text("".join(json.dumps({"query": "the cat", "response": "sat on the mat"}) + "\n"
                            for _ in range(6)))
    args = [f"--model={tmp / 'm'}", f"--dataset={data}", "--max_steps=3", "--max_length=32",
            f"--output_dir={tmp / 'run'}", "--train_type=lora", "--lora_rank=2"]
    r = testutil.run_module("launch.sft", *args)
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    self.assertEqual(json.loads(r.stdout)["steps"], 3)
    self.assertTrue((tmp / "run" / "adapter" / "adapter_config.json").is_file())
    # The same output directory again, without --resume: refused in one line.
    testutil.assert_one_line_error(self, testutil.run_module("launch.sft", *args),
                                   "already holds checkpoints")
    bad = tmp / "bad.jsonl"
    bad.write_text('{"query": "a", "response": "b"}\n{oops\n')
    testutil.assert_one_line_error(
        self, testutil.run_module("launch.sft", f"--dataset={bad}", f"--model={tmp / 'm'}",
                                  f"--output_dir={tmp / 'r2'}"), rf"{bad}:2: invalid JSON")

    # The adapters it wrote, in launch.infer's batch mode: merged and unmerged answer alike
    # (greedy), one response row per request, the reference answer kept as `labels`.
    requests = tmp / "requests.jsonl"
    requests.write_text(json.dumps({"prompt": "the cat"}) + "\n" + json.dumps(
        {"query": "the dog", "response": "ate the bone"}) + "\n")
    answers = {}
    for merge in ("true", "false"):
      out = tmp / f"answers_{merge}.jsonl"
      r = testutil.run_module("launch.infer", f"--model={tmp / 'm'}", f"--input_file={requests}",
                              f"--output_file={out}", f"--adapters={tmp / 'run' / 'adapter'}",
                              f"--merge_lora={merge}", "--max_new_tokens=4")
      self.assertEqual(r.returncode, 0, r.stderr[-2000:])
      rows = [json.loads(line) for line in out.read_text().splitlines()]
      self.assertEqual([row["labels"] for row in rows], [None, "ate the bone"])
      self.assertEqual(rows[1]["messages"], [{"role": "user", "content": "the dog"}])
      answers[merge] = [row["response"] for row in rows]
    self.assertEqual(answers["true"], answers["false"])
    # Interactive mode reads turns from stdin until `exit`, keeping the history.
    r = subprocess.run([sys.executable, "-m", "launch.infer", f"--model={tmp / 'm'}",
                        "--interactive", "--max_new_tokens=3"], input="the cat\nthe dog\nexit\n",
                       cwd=testutil.REPO_ROOT, env=testutil.subprocess_env(), capture_output=True,
                       text=True, timeout=300)
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    self.assertEqual(len(r.stdout.splitlines()), 2, r.stdout)
    # Adapters of another shape are refused in one line that names the tensor.
    testutil.save_tiny_llama(tmp / "wide", hidden_size=48)
    testutil.save_tiny_tokenizer(tmp / "wide")
    testutil.assert_one_line_error(
        self, testutil.run_module("launch.infer", f"--model={tmp / 'wide'}",
                                  f"--adapters={tmp / 'run' / 'adapter'}"), r"lora_[ab] has shape .*expected")

