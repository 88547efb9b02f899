"""segpipe: batch annotation and dataset processing for image segmentation."""

__version__ = "0.1.0"
