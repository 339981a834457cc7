"""Segmentation task package."""
