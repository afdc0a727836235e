"""Datasets: the prepared on-disk layout, synthetic scenes, NYU Depth V2 / SUN-RGBD / folder import, HHA, loading."""
