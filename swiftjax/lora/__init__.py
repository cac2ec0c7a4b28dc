"""Functional tuners as transforms of parameter pytrees.

    from swiftjax.lora import lora
    params, adapters = lora.init(params, rng, lora.LoraConfig(r=8, alpha=32))
    logits, _ = decoder.apply(lora.apply(params, adapters, cfg), tokens, model_cfg)

Modules: `lora` (LoRA, rsLoRA, DoRA, PiSSA, OLoRA), `peft_io` (PEFT adapter directories),
`optim` (LoRA+, freezing, trainable/frozen split), `paths` (target selection).
Tuners register their weight kinds with `swiftjax.linear.register_kind`; models never import them.
"""
