"""Functional tuners (LoRA and its family, QLoRA, adapters, ...) as transforms of param pytrees.

Tuners register their weight kinds with `swiftjax.linear.register_kind`; models never import them.
"""
