"""Names of pe's local tasks, importable without importing mteb (e.g. for CLI choices)."""

LOCAL_TASK_NAMES = ("PELocalDocstringRetrieval", "PELocalDocstringPairClassification")
