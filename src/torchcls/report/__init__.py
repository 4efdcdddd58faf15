"""What a run writes and shows: log.txt, metrics.jsonl, TensorBoard, plots, progress."""
