"""Training: ``pe train`` (Prompting LLM + alignment), ``pe align`` (a new alignment
only), the LoRA baseline, and what they share (data, loss, checkpoints, logs).

The public entry points are :func:`pe_core.train` and :func:`pe_core.align`
(:mod:`pe_core.training.api`); this package imports nothing heavy until used.
"""
