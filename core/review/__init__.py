"""Clinical review of a worklist: cases, verdicts, corrections, all saved as they happen (no Qt).

See ``docs/REVIEW_IMPL.md``.
"""

from core.review.edits import Edit, brush, delete_component, disk_offsets, fill_region
from core.review.mask_result import (
    class_volumes,
    joint_counts,
    mask_result,
    result_from_joint,
    update_joint,
)
from core.review.state import STATE_FILE, STATUSES, CaseReview, ReviewState
from core.review.worklist import REVIEW_FOLDER, Worklist, WorklistCase, read_worklist

__all__ = [
    "REVIEW_FOLDER",
    "STATE_FILE",
    "STATUSES",
    "CaseReview",
    "Edit",
    "ReviewState",
    "Worklist",
    "WorklistCase",
    "brush",
    "class_volumes",
    "delete_component",
    "disk_offsets",
    "fill_region",
    "joint_counts",
    "mask_result",
    "read_worklist",
    "result_from_joint",
    "update_joint",
]
