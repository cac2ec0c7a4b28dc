"""launch/ conventions: absl flags, --helpfull, one clear line for user mistakes."""

import pathlib

from absl.testing import absltest
import pytest

from tests import testutil


class LaunchInferTest(absltest.TestCase):

  def test_helpfull_lists_flags(self):
    r = testutil.run_module("launch.infer", "--helpfull")
    self.assertEqual(r.returncode, 0, r.stderr)
    for flag in ("--model", "--prompt", "--max_new_tokens", "--temperature", "--top_k", "--top_p",
                 "--repetition_penalty", "--[no]stream"):
      self.assertIn(flag, r.stdout)

  def _assert_one_line_error(self, r, pattern):
    self.assertNotEqual(r.returncode, 0)
    self.assertNotIn("Traceback", r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    self.assertTrue(any(__import__("re").search(pattern, l) for l in lines), r.stderr)
    self.assertLessEqual(len(lines), 2, r.stderr)

  def test_bad_flag_value(self):
    self._assert_one_line_error(testutil.run_module("launch.infer", "--max_new_tokens=abc"),
                                r"--max_new_tokens=abc")

  def test_out_of_range_flag(self):
    self._assert_one_line_error(testutil.run_module("launch.infer", "--top_p=2"), r"--top_p")

  def test_missing_model_file(self):
    r = testutil.run_module("launch.infer", "--model=/nonexistent/model.gguf")
    self._assert_one_line_error(r, r"^error: GGUF file /nonexistent/model\.gguf does not exist")
    self.assertEqual(r.returncode, 2)

  def test_mesh_that_does_not_fit(self):
    r = testutil.run_module("launch.infer", "--mesh_tensor=3")
    self._assert_one_line_error(r, r"^error: 1 devices do not divide into mesh")

  def test_stray_positional_argument(self):
    r = testutil.run_module("launch.infer", "hello")
    self._assert_one_line_error(r, r"unexpected positional arguments")

  def test_directory_without_tokenizer(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    testutil.save_tiny_llama(tmp)
    r = testutil.run_module("launch.infer", f"--model={tmp}")
    self._assert_one_line_error(r, rf"error: {tmp} has no tokenizer files")

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
    self._assert_one_line(testutil.run_module("launch.sft", *args), "already holds checkpoints")
    bad = tmp / "bad.jsonl"
    bad.write_text('{"query": "a", "response": "b"}\n{oops\n')
    self._assert_one_line(testutil.run_module("launch.sft", f"--dataset={bad}",
                                              f"--model={tmp / 'm'}",
                                              f"--output_dir={tmp / 'r2'}"),
                          rf"{bad}:2: invalid JSON")

  def _assert_one_line(self, r, pattern):
    import re  # pylint: disable=g-import-not-at-top
    self.assertEqual(r.returncode, 2, r.stderr[-2000:])
    self.assertNotIn("Traceback", r.stderr)
    self.assertTrue(re.search(pattern, r.stderr), r.stderr)
