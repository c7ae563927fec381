"""Labeled data for ML teams: what is released, who may see the test split, snapshots, exports, data-flow log."""
