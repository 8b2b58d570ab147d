"""The embedder itself: its config (:mod:`.config`), the Prompting LLM
(:mod:`.prompting`), the alignment (:mod:`.alignment`), the backbone pass
(:mod:`.encoder`, :mod:`.layout`, :mod:`.pooling`), batching (:mod:`.batching`) and the
public :class:`~pe_core.model.embedder.PromptEmbedder` (:mod:`.embedder`)."""
