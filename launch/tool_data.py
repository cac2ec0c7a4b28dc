r"""Write the generated tool-use dataset (train / valid / held-out test) to a directory.

  python -m launch.tool_data --output_dir=data/tools --train=2000 --valid=200 --test=300
  python -m launch.tool_data --output_dir=data/tools --seed=1 --overwrite
  python -m launch.tool_data --output_dir=data/tools_short --distractors=1,2

Writes `train.jsonl`, `valid.jsonl`, `test.jsonl` (rows in the `messages` + `tools` format, see
`swiftjax/agent/tooldata.py`) and `tools.json` (which tools each split uses; the test split's
tools never appear in train or valid). The same --seed (and --distractors) always writes the
same files. --distractors=MIN,MAX sets how many tools each row offers besides the ones it calls
(default 2,4; fewer make shorter rows, in every split). Prints a one-line JSON summary.
"""

import json

from absl import flags

from launch import common
from swiftjax import errors

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory to write the files to.",
                                  required=True)
_TRAIN = flags.DEFINE_integer("train", 2000, "Training rows.", lower_bound=0)
_VALID = flags.DEFINE_integer("valid", 200, "Validation rows (training tools).", lower_bound=0)
_TEST = flags.DEFINE_integer("test", 300, "Test rows (held-out tools only).", lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "Chooses the held-out tools and every sample.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Write into a non-empty --output_dir, "
                               "replacing the dataset files there.")
_DISTRACTORS = flags.DEFINE_list("distractors", ["2", "4"], "MIN,MAX tools offered per row "
                                 "besides the ones it calls (every split).")


def _distractors() -> tuple[int, int]:
  try:
    lo, hi = (int(v) for v in _DISTRACTORS.value)
  except ValueError:
    lo = hi = -1
  if not 0 <= lo <= hi:
    raise errors.ConfigError(f"--distractors must be MIN,MAX with 0 <= MIN <= MAX, got "
                             f"{','.join(_DISTRACTORS.value)!r}")
  return lo, hi


def main(argv):
  del argv
  from swiftjax.agent import tooldata  # pylint: disable=g-import-not-at-top
  summary = tooldata.write_splits(_OUTPUT_DIR.value, _TRAIN.value, _VALID.value, _TEST.value,
                                  seed=_SEED.value, overwrite=_OVERWRITE.value,
                                  distractors=_distractors())
  print(json.dumps(summary))


if __name__ == "__main__":
  common.run(main)
