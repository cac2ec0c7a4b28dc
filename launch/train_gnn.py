r"""Train GraphSAGE (mean aggregation) full-batch on a Planetoid graph, for the GNN server.

  python -m launch.train_gnn --dataset=cora --workdir=runs/sage_cora
  python -m launch.train_gnn --dataset=citeseer --data_root=../shared/data/planetoid \
      --workdir=runs/sage_citeseer --epochs=200 --hidden=64 --lr=0.01 --weight_decay=5e-4

Writes `checkpoint/` (Orbax), `metrics.json` and `config.json` to --workdir (see
`graphs/sage_train.py`; the server reads them with `graphs.sage_train.load_model`) and prints the
train/validation/test accuracy of the epoch with the best validation accuracy.
"""

import json

from absl import flags

from launch import common

_DATASET = flags.DEFINE_string("dataset", "cora", "Planetoid dataset: cora or citeseer (this "
                               "copy of pubmed lacks the allx features).")
_DATA_ROOT = flags.DEFINE_string("data_root", "../shared/data/planetoid",
                                 "Folder holding the ind.<dataset>.* files.")
_WORKDIR = flags.DEFINE_string("workdir", "output/train_gnn", "Where the run writes.")
_EPOCHS = flags.DEFINE_integer("epochs", 200, "Full-batch training steps at most.", lower_bound=1)
_HIDDEN = flags.DEFINE_integer("hidden", 64, "Hidden width.", lower_bound=1)
_LAYERS = flags.DEFINE_integer("num_layers", 2, "GraphSAGE layers (hops).", lower_bound=1)
_LR = flags.DEFINE_float("lr", 0.01, "Adam learning rate.", lower_bound=0.0)
_WD = flags.DEFINE_float("weight_decay", 5e-4, "L2 penalty (coupled, as in PyTorch Adam).",
                         lower_bound=0.0)
_DROPOUT = flags.DEFINE_float("dropout", 0.5, "Dropout on every layer's input.", lower_bound=0.0,
                              upper_bound=0.99)
_NORMALIZE = flags.DEFINE_bool("normalize", False, "L2-normalise hidden embeddings.")
_NORM_FEATURES = flags.DEFINE_bool("normalize_features", True, "Row-normalise input features.")
_PATIENCE = flags.DEFINE_integer("patience", 0, "Stop after this many epochs without a better "
                                 "validation accuracy (0: run all epochs).", lower_bound=0)
_FANOUTS = flags.DEFINE_list("fanouts", None, "Neighbours per hop to serve with, one per layer "
                             "(default 25,10 for two layers).")
_SEED = flags.DEFINE_integer("seed", 0, "Init and dropout seed.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a model already in --workdir.")


def main(argv):
  del argv
  from graphs import sage_train  # pylint: disable=g-import-not-at-top
  from graphs.errors import GraphError  # pylint: disable=g-import-not-at-top
  fanouts = None
  if _FANOUTS.value:
    try:
      fanouts = tuple(int(k) for k in _FANOUTS.value)
    except ValueError:
      raise GraphError(f"--fanouts must be integers, got {','.join(_FANOUTS.value)}") from None
  cfg = sage_train.TrainConfig(
      dataset=_DATASET.value, data_root=_DATA_ROOT.value, epochs=_EPOCHS.value,
      hidden=_HIDDEN.value, num_layers=_LAYERS.value, lr=_LR.value, weight_decay=_WD.value,
      dropout=_DROPOUT.value, normalize=_NORMALIZE.value,
      normalize_features=_NORM_FEATURES.value, patience=_PATIENCE.value, fanouts=fanouts,
      seed=_SEED.value, overwrite=_OVERWRITE.value)
  metrics = sage_train.train_and_evaluate(cfg, _WORKDIR.value)
  print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))


if __name__ == "__main__":
  common.run(main)
