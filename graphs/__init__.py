"""SEG: link prediction that fuses path labels around the target pair with a GNN (Jraph, OGB).

Models, datasets and labelling live here; nothing in `graphs/` imports `serving/` or `swiftjax/`.
"""
