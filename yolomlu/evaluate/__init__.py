"""Evaluation: COCO mAP, speed benchmarks and the shared pre/post-processing pipeline."""
