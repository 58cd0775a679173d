"""Pose-validity prior over COCO-17 poses (after RePoseDM)."""
