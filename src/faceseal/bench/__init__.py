"""Benchmarks of the fast paths, each figure beside a baseline measured in the same run."""

from faceseal.bench.runner import BenchOptions, format_report, run_bench
from faceseal.bench.synthetic import SyntheticGallery, make_gallery

__all__ = ["BenchOptions", "SyntheticGallery", "format_report", "make_gallery", "run_bench"]
