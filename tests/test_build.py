"""BUILD stays true to the tree: every module and test has a target, every dep is declared."""

import pathlib
import shutil

from absl.testing import absltest

from tests import build_check
from tests import testutil


def _copy_tree(dst: pathlib.Path) -> None:
  root = testutil.REPO_ROOT
  for name in ("BUILD", "pyproject.toml"):
    shutil.copy(root / name, dst / name)
  for d in build_check.PACKAGE_DIRS:
    if (root / d).is_dir():
      shutil.copytree(root / d, dst / d, ignore=shutil.ignore_patterns("__pycache__"))


class BuildTest(absltest.TestCase):

  def test_build_matches_tree(self):
    problems = build_check.check(testutil.REPO_ROOT)
    self.assertEqual(problems, [], "\n".join(problems))

  def test_every_package_has_a_library(self):
    targets = {t.name: t for t in build_check.parse_build(testutil.REPO_ROOT / "BUILD")}
    for package in ("swiftjax", "graphs", "serving", "launch"):
      self.assertIn(package, targets)
      self.assertEqual(targets[package].rule, "py_library")

  def test_untracked_module_is_reported(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    _copy_tree(tmp)
    self.assertEqual(build_check.check(tmp), [])
    (tmp / "swiftjax" / "brand_new.py").write_text('"""Not in BUILD."""\n')
    (tmp / "tests" / "test_brand_new.py").write_text('"""Not in BUILD."""\n')
    problems = build_check.check(tmp)
    self.assertIn("swiftjax/brand_new.py is not in any BUILD target's srcs", problems)
    self.assertIn("tests/test_brand_new.py is not in any BUILD target's srcs", problems)

  def test_undeclared_pypi_dependency_is_reported(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    _copy_tree(tmp)
    build = tmp / "BUILD"
    build.write_text(build.read_text().replace('"@pypi//jax",', '"@pypi//jax", "@pypi//left_pad",',
                                               1))
    problems = build_check.check(tmp)
    self.assertTrue(any("@pypi//left_pad" in p and "does not declare" in p for p in problems),
                    problems)

  def test_missing_import_dependency_is_reported(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    _copy_tree(tmp)
    (tmp / "graphs" / "__init__.py").write_text('"""x"""\nimport safetensors\n')
    problems = build_check.check(tmp)
    self.assertTrue(any("lacks @pypi//safetensors" in p for p in problems), problems)

  def test_removed_file_is_reported(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    _copy_tree(tmp)
    (tmp / "swiftjax" / "errors.py").unlink()
    problems = build_check.check(tmp)
    self.assertTrue(any("swiftjax/errors.py, which does not exist" in p for p in problems),
                    problems)


if __name__ == "__main__":
  absltest.main()
