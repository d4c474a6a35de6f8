"""Evaluation: one predictor per model, the task's metric over splits and degradation
grids (Acc(All) for classification), result tables and figures."""

from fdjax.eval.levels import (evaluate_all, evaluate_levels, mean_over_levels, subset,
                               with_degradation, with_degradations)
from fdjax.eval.metric import jit_clean, predictor, split_scores
from fdjax.eval.report import format_table, per_level_rows, summarize
from fdjax.eval.report_files import load_records, write_reports

__all__ = [
    "evaluate_all", "evaluate_levels", "format_table", "jit_clean", "load_records",
    "mean_over_levels", "per_level_rows", "predictor", "split_scores", "subset", "summarize",
    "with_degradation", "with_degradations", "write_reports",
]
