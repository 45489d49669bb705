"""Data layer: record schemas, world directories, and the embedded fictitious world."""

from .io import (
    DOC_SPLITS,
    QA_SPLITS,
    DataError,
    WorldData,
    check_overlap,
    load_split,
    load_world,
    overlap,
    read_jsonl,
    require_split,
    split_source,
    write_jsonl,
)
from .schema import DocRecord, QARecord
from .world import build_world, generate_world

__all__ = [
    "DOC_SPLITS", "QA_SPLITS", "DataError", "DocRecord", "QARecord", "WorldData", "build_world",
    "check_overlap", "generate_world", "load_split", "load_world", "overlap", "read_jsonl", "require_split",
    "split_source", "write_jsonl",
]
