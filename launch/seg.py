r"""Link prediction: SEG and its baselines (SEAL, GCN, GraphSAGE) on OGB, Planetoid or an edge list.

  python -m launch.seg --dataset=cora --model=seg --epochs=100 --output_dir=runs/seg_cora
  python -m launch.seg --dataset=cora --model=seg --gnn=subgraph --num_hops=1 --epochs=6 \
      --output_dir=runs/seg_sub_cora
  python -m launch.seg --dataset=ogbl-ddi --data_root=../shared/data --model=gcn --epochs=100 \
      --output_dir=runs/gcn_ddi
  python -m launch.seg --dataset=my_edges.txt --model=seal --num_hops=2 --output_dir=runs/x

Writes `tensorboard/`, `checkpoint/` and `results.json` (keys such as `test/hits@20`) to
--output_dir (see `graphs/link_train.py`) and prints the results without the history. Model flags
left at their defaults are not passed, so each model keeps its own defaults (`SubgraphConfig` for
seg/seal, `GAEConfig` for gcn/sage); a flag that does not apply to --model is an error.
"""

import json

from absl import flags

from launch import common

_DATASET = flags.DEFINE_string("dataset", "cora", "ogbl-ddi (or another ogbl-* name), cora, "
                               "citeseer, or the path of an edge-list file (`src dst` lines).")
_DATA_ROOT = flags.DEFINE_string("data_root", None, "OGB root or Planetoid folder (default: "
                                 "../shared/data for ogbl-*, ../shared/data/planetoid for "
                                 "cora/citeseer).")
_MODEL = flags.DEFINE_enum("model", "seg", ["seg", "seal", "gcn", "sage"], "Model.")
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Training epochs.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Model, negatives and (Planetoid/edge list) split seed.")
_SPLIT_SEED = flags.DEFINE_integer("split_seed", None, "Seed of the random edge split (default: "
                                   "--seed).")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 1, "Evaluate every N epochs.", lower_bound=1)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "output/seg", "Where the run writes.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a finished run in --output_dir.")

# Model options: passed on only when given, to the model's own config.
_OPTIONS = {
    # SEG's GNN: per-pair subgraphs (SubgraphConfig) or the whole graph (seg_full.FullSEGConfig)
    "gnn": flags.DEFINE_enum("gnn", "full", ["subgraph", "full"], "seg: a GCN over the whole "
                             "graph fused with exact path labels, or DGCNN on each pair's "
                             "enclosing subgraph (the seg/seal flags below)."),
    "encoder": flags.DEFINE_enum("encoder", "gcn", ["gcn", "sage"], "seg --gnn=full: the "
                                 "ordinary GNN over the whole graph."),
    "num_buckets": flags.DEFINE_integer("num_buckets", 12, "seg --gnn=full: log-scale buckets of "
                                        "the length-3 path counts."),
    "structure_hidden": flags.DEFINE_integer("structure_hidden", 64, "seg --gnn=full: "
                                             "structure encoder width."),
    "path_pool": flags.DEFINE_integer("path_pool", 0, "seg --gnn=full: width of the pooled "
                                      "GNN embeddings of the pair's common neighbours (0: off)."),
    "mask_targets": flags.DEFINE_bool("mask_targets", False, "seg --gnn=full: leave each "
                                      "step's positive edges out of the GNN's propagation."),
    "loss": flags.DEFINE_enum("loss", "bce", ["bce", "auc"], "seg --gnn=full: BCE (OGB's) or "
                              "the pairwise square AUC loss (PLNLP)."),
    "fusion": flags.DEFINE_enum("fusion", "concat", ["concat", "sum"], "seg --gnn=full: one "
                                "decoder over GNN and structure codes, or the GNN's decoder "
                                "plus a structure head, logits added."),
    "ema": flags.DEFINE_float("ema", 0.0, "seg --gnn=full: decay of the parameters' moving "
                              "average used for scoring (0: off)."),
    "num_neg": flags.DEFINE_integer("num_neg", 1, "seg --gnn=full: random negatives per "
                                    "training positive."),
    # SEG / SEAL (graphs.subgraph_runner.SubgraphConfig)
    "num_hops": flags.DEFINE_integer("num_hops", 1, "seg/seal: hops of the enclosing subgraph."),
    "max_nodes_per_hop": flags.DEFINE_integer("max_nodes_per_hop", None,
                                              "seg/seal: cap on nodes per hop (default none)."),
    "lam": flags.DEFINE_integer("lam", 3, "seg: path length bound (2..4)."),
    "per_length": flags.DEFINE_bool("per_length", False, "seg: one-hot per-length path counts."),
    "pair_counts": flags.DEFINE_bool("pair_counts", False, "seg: also feed the pair's exact "
                                     "common-neighbour count to the structure score."),
    "pair_readout": flags.DEFINE_bool("pair_readout", True, "seg: add the MLP(h_u * h_v) "
                                      "readout to SortPool's."),
    "gnn_hidden": flags.DEFINE_integer("gnn_hidden", 32, "seg/seal: DGCNN width."),
    "gnn_layers": flags.DEFINE_integer("gnn_layers", 3, "seg/seal: DGCNN layers."),
    "sortpool_k": flags.DEFINE_integer("sortpool_k", 0, "seg/seal: SortPool k (0: 60% quantile)."),
    "train_pairs_per_epoch": flags.DEFINE_integer(
        "train_pairs_per_epoch", 0, "seg/seal: training positives per epoch (0: all)."),
    "mode": flags.DEFINE_enum("mode", "auto", ["auto", "cached", "dynamic"],
                              "seg/seal: cache subgraphs or extract per batch."),
    "data_shards": flags.DEFINE_integer("data_shards", 1, "seg/seal: devices on the data axis."),
    "eval_batch_size": flags.DEFINE_integer("eval_batch_size", 256, "seg/seal: graphs per "
                                            "scoring call."),
    "use_features": flags.DEFINE_bool("use_features", True, "Feed the dataset's node features."),
    # Shared
    "embedding_dim": flags.DEFINE_integer("embedding_dim", 32, "Learnable node embedding width "
                                          "(0: none)."),
    "hidden": flags.DEFINE_integer("hidden", 32, "Hidden width."),
    "dropout": flags.DEFINE_float("dropout", 0.5, "Dropout."),
    "batch_size": flags.DEFINE_integer("batch_size", 64, "Pairs per step (gcn/sage: positives)."),
    "lr": flags.DEFINE_float("lr", 1e-3, "Learning rate."),
    # GCN / SAGE (graphs.gae.GAEConfig), also the GNN of seg --gnn=full
    "num_layers": flags.DEFINE_integer("num_layers", 2, "gcn/sage/seg --gnn=full: layers."),
    "decoder": flags.DEFINE_enum("decoder", "mlp", ["mlp", "dot"], "gcn/sage: pair decoder."),
    "decoder_layers": flags.DEFINE_integer("decoder_layers", 3, "gcn/sage/seg --gnn=full: "
                                           "Linear layers of the pair decoder (OGB's ddi "
                                           "example: 2).", lower_bound=1),
    "adjacency": flags.DEFINE_enum("adjacency", "auto", ["auto", "dense", "sparse"],
                                   "gcn/sage/seg --gnn=full: dense or sparse message passing."),
    "neg_sampler": flags.DEFINE_enum("neg_sampler", "uniform", ["uniform", "non_edge"],
                                     "gcn/sage/seg --gnn=full: training negatives, uniform node "
                                     "pairs or pairs that are not training edges (OGB's)."),
    "grad_clip": flags.DEFINE_float("grad_clip", 0.0, "gcn/sage/seg --gnn=full: clip each "
                                    "parameter group's gradient norm to this (0: off; OGB's "
                                    "ddi example: 1.0)."),
}


def main(argv):
  del argv
  from graphs import link_train  # pylint: disable=g-import-not-at-top
  dataset = _DATASET.value
  root = _DATA_ROOT.value
  if root is None:
    root = "../shared/data" if dataset.lower().startswith("ogbl") else "../shared/data/planetoid"
  options = {name: holder.value for name, holder in _OPTIONS.items()
             if flags.FLAGS[name].present}
  cfg = link_train.LinkTrainConfig(
      dataset=dataset, data_root=root, model=_MODEL.value, epochs=_EPOCHS.value,
      seed=_SEED.value, split_seed=_SPLIT_SEED.value, eval_every=_EVAL_EVERY.value,
      model_options=options, overwrite=_OVERWRITE.value)
  results = link_train.train_and_evaluate(cfg, _OUTPUT_DIR.value)
  print(json.dumps({k: v for k, v in results.items() if k not in ("history", "config")},
                   indent=2))


if __name__ == "__main__":
  common.run(main)
