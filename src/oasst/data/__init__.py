"""The oasst data format: message trees and their JSONL exports.

Pure Python and pydantic, importing nothing else of oasst, so that training scripts, the backend, the
client and third-party tools can all read and write the same files. Everything public is listed in
`__all__`; the submodules are implementation detail.
"""

from oasst.data.anonymize import Anonymizer
from oasst.data.errors import OasstDataError
from oasst.data.reader import (
    Source,
    open_jsonl,
    read_message_trees,
    read_messages,
    read_oasst_jsonl,
    read_oasst_obj,
)
from oasst.data.rebuild import build_tree, flatten
from oasst.data.schemas import (
    DetoxifyRating,
    ExportMessageEvent,
    ExportMessageEventEmoji,
    ExportMessageEventOther,
    ExportMessageEventRanking,
    ExportMessageEventRating,
    ExportMessageEventReport,
    ExportMessageEventScore,
    ExportMessageNode,
    ExportMessageTree,
    LabelAvgValue,
    LabelValues,
    Role,
)
from oasst.data.traversal import (
    count_messages,
    iter_messages,
    iter_threads,
    visit_messages_depth_first,
    visit_threads_depth_first,
)
from oasst.data.writer import Target, write_message_trees, write_messages

__all__ = [
    "Anonymizer",
    "DetoxifyRating",
    "ExportMessageEvent",
    "ExportMessageEventEmoji",
    "ExportMessageEventOther",
    "ExportMessageEventRanking",
    "ExportMessageEventRating",
    "ExportMessageEventReport",
    "ExportMessageEventScore",
    "ExportMessageNode",
    "ExportMessageTree",
    "LabelAvgValue",
    "LabelValues",
    "OasstDataError",
    "Role",
    "Source",
    "Target",
    "build_tree",
    "count_messages",
    "flatten",
    "iter_messages",
    "iter_threads",
    "open_jsonl",
    "read_message_trees",
    "read_messages",
    "read_oasst_jsonl",
    "read_oasst_obj",
    "visit_messages_depth_first",
    "visit_threads_depth_first",
    "write_message_trees",
    "write_messages",
]
