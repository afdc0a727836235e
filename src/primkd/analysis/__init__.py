"""Representation analysis: linear CKA between feature maps and feature-value histograms."""
