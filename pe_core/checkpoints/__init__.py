"""Real checkpoints: verified loading of transformers folders, GGUF files dequantized into
a cache, the tokenizer rebuilt from GGUF metadata, and the ``pe-real:`` tier of
pretrained checkpoints that packages on the index ship."""
