"""Which instruction the query side of an MTEB task gets.

Order: a task-specific entry (:data:`TASK_INSTRUCTIONS`), then the task metadata's own
``prompt``, then a default for the task type (:data:`TYPE_INSTRUCTIONS`).
"""

from __future__ import annotations

from typing import Any

from pe_core.data.corpus import DOC_INSTRUCTION
from pe_core.data.lee import LEE_INSTRUCTION
from pe_core.data.wordnet import WORDNET_INSTRUCTION

#: Defaults by MTEB task type.
TYPE_INSTRUCTIONS: dict[str, str] = {
    "Retrieval": "Given a query, retrieve relevant passages that answer the query",
    "InstructionRetrieval": "Given a query, retrieve relevant passages that answer the query",
    "Reranking": "Given a query, retrieve the passages most relevant to it",
    "STS": "Retrieve semantically similar text",
    "PairClassification": "Retrieve text that is semantically equivalent to the given text",
    "Classification": "Classify the given text by its topic and intent",
    "MultilabelClassification": "Classify the given text by its topics",
    "Clustering": "Identify the main topic or theme of the given text",
    "Summarization": "Given a summary, retrieve other summaries with the same meaning",
    "BitextMining": "Retrieve the sentence that is a translation of the given sentence",
}
FALLBACK_INSTRUCTION = "Represent the text for finding related texts"

#: Task-specific instructions (local tasks and a few common MTEB tasks).
TASK_INSTRUCTIONS: dict[str, str] = {
    "PELocalDocstringRetrieval": DOC_INSTRUCTION,
    "PELocalDocstringPairClassification": DOC_INSTRUCTION,
    "PELeeSTS": LEE_INSTRUCTION,
    "PEWordNetRetrieval": WORDNET_INSTRUCTION,
    "NFCorpus": "Given a question, retrieve relevant documents that best answer the question",
    "SciFact": "Given a scientific claim, retrieve documents that support or refute the claim",
    "ArguAna": "Given a claim, find documents that refute the claim",
    "FiQA2018": "Given a financial question, retrieve user replies that best answer it",
    "SCIDOCS": "Given a scientific paper title, retrieve paper abstracts cited by it",
    "STSBenchmark": "Retrieve semantically similar text",
    "SprintDuplicateQuestions": "Retrieve duplicate questions from the Sprint forum",
    "Banking77Classification": "Given an online banking query, find the corresponding intent",
    "TwentyNewsgroupsClustering.v2": "Identify the topic or theme of the given news article",
}


def instruction_for(task_metadata: Any, prompt_type: Any = None) -> str | None:
    """The instruction for one side of a task, or None for the document side.

    ``prompt_type`` is mteb's ``PromptType`` (or its string value): ``"document"`` gets no
    instruction; ``"query"`` and ``None`` (symmetric tasks: both sides) get one.

    Example::

        >>> from types import SimpleNamespace as NS
        >>> instruction_for(NS(name="X", type="STS", prompt=None))
        'Retrieve semantically similar text'
        >>> instruction_for(NS(name="X", type="Retrieval", prompt=None), "document") is None
        True
    """
    side = getattr(prompt_type, "value", prompt_type)
    if side == "document":
        return None
    name = getattr(task_metadata, "name", None)
    if name in TASK_INSTRUCTIONS:
        return TASK_INSTRUCTIONS[name]
    prompt = getattr(task_metadata, "prompt", None)
    if isinstance(prompt, str) and prompt:
        return prompt
    if isinstance(prompt, dict) and prompt.get("query"):
        return str(prompt["query"])
    return TYPE_INSTRUCTIONS.get(str(getattr(task_metadata, "type", "")), FALLBACK_INSTRUCTION)
