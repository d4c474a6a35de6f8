"""Evaluation: jitted prediction, accuracy over splits, Acc(All) over degradation
grids, result tables and figures."""

from fdjax.eval.levels import (DEFAULT_SEED, acc_all, clean_accuracy, eval_key, evaluate_all,
                               evaluate_levels, make_degraded_predict, model_predict,
                               stride_levels, with_degradation)
from fdjax.eval.predict import accuracy, make_predict
from fdjax.eval.report import format_table, load_records, per_level_rows, summarize, write_reports

__all__ = [
    "DEFAULT_SEED", "acc_all", "accuracy", "clean_accuracy", "eval_key", "evaluate_all",
    "evaluate_levels", "format_table", "load_records", "make_degraded_predict", "make_predict",
    "model_predict", "per_level_rows", "stride_levels", "summarize", "with_degradation",
    "write_reports",
]
