"""The real data in ../shared/data is present and intact (later tests and benchmarks read it)."""

import hashlib

from absl.testing import absltest
import pytest

from tests import testutil


class SharedDataTest(absltest.TestCase):

  def test_checksums(self):
    root = testutil.require_shared()
    sums = testutil.require_shared("SHA256SUMS").read_text().splitlines()
    self.assertGreater(len(sums), 100)
    bad = []
    for line in sums:
      digest, name = line.split(maxsplit=1)
      # MANIFEST.md is prose edited after the sums were taken; the data files are what matter.
      if name.endswith("MANIFEST.md"):
        continue
      data = (root / name).read_bytes()
      if hashlib.sha256(data).hexdigest() != digest:
        bad.append(name)
    self.assertEqual(bad, [])

  def test_layout_later_jobs_rely_on(self):
    for parts in (("ogbl_ddi", "raw", "edge.csv.gz"), ("ogbl_ddi", "split", "target"),
                  ("planetoid",), ("snap",), ("toolbench",), ("llamafactory", "data"),
                  ("gsm8k",), ("mmlu_qlora",)):
      self.assertTrue(testutil.require_shared(*parts).exists())

  def test_absent_data_skips_with_a_reason(self):
    with self.assertRaisesRegex(pytest.skip.Exception, r"(no_such_folder|shared/data) is absent"):
      testutil.require_shared("no_such_folder")


if __name__ == "__main__":
  absltest.main()
