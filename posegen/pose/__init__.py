"""posegen.pose: COCO-17 keypoints, pose backends, keypoint file formats and extraction.

Submodules: :mod:`.keypoints` (conventions and conversions), :mod:`.backends` (estimators),
:mod:`.formats` (Parquet / Pose-Transfer CSV / COCO JSON), :mod:`.extract` (dataset extraction),
:mod:`.native_logs` (mediapipe / TFLite log lines silenced unless verbose).
Import the submodules directly; this package does not import them eagerly, so that importing
the keypoint conventions never loads mediapipe.
"""
