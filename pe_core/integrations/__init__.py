"""pe inside other libraries' stacks: a saved pe model is also a sentence-transformers
model (:mod:`pe_core.integrations.st_files` writes the files that make it one;
:mod:`pe_core.integrations.sentence_transformers` is the module sentence-transformers
loads). Nothing here is imported by ``import pe_core``."""
