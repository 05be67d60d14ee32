"""Segmentation decisions: RankSEG-RMA, argmax and threshold rules, expected Dice/IoU."""

from core.seg.expected import expected_dice, expected_iou
from core.seg.rma import RMAInfo, rankseg_rma
from core.seg.simple_rules import argmax_decision, threshold_decision

__all__ = [
    "RMAInfo",
    "rankseg_rma",
    "argmax_decision",
    "threshold_decision",
    "expected_dice",
    "expected_iou",
]
