"""Task collections: records, sources (BIG-bench, the ten benchmarks, SNI, user files),
descriptions, decontamination, prompt formatting and task-balanced sampling.

Task names: benchmarks by bare name (``arc_easy``, ``gsm8k``, see :data:`BENCHMARKS`), other
tasks prefixed by their collection: ``bigbench/arithmetic/1_digit_addition``,
``sni/task001_quoref_question_generation``, ``user/<name>``.
"""

from .catalog import COLLECTIONS, build_collection, get_task, list_collections, load_collection, resolve_tasks
from .descriptions import alignment_set, benchmark_descriptions
from .prompts import CONDITIONS, format_prompt, icl_shots
from .records import Example, TaskRecord, task_slug
from .sampler import TaskSampler
from .sources.benchmarks import BENCHMARKS, GSM8K_PREFILL

__all__ = ["Example", "TaskRecord", "BENCHMARKS", "COLLECTIONS", "CONDITIONS", "GSM8K_PREFILL",
           "load_collection", "build_collection", "get_task", "resolve_tasks", "list_collections", "format_prompt", "icl_shots",
           "TaskSampler", "benchmark_descriptions", "alignment_set", "task_slug"]
