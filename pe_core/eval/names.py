"""Names of pe's local and real tasks, importable without importing mteb (e.g. for CLI choices)."""

LOCAL_TASK_NAMES = ("PELocalDocstringRetrieval", "PELocalDocstringPairClassification")
REAL_TASK_NAMES = ("PELeeSTS", "PEWordNetRetrieval")
