"""Fusing per-degradation experts into one predictor (FusionDistill's baselines).

* Weight space (``soup``): uniform, weighted and greedy model soups of Flax
  variables, with the BatchNorm running statistics either averaged or, as in
  the paper's code, taken from the first expert (``batch_stats='paper'``).
* ``batchnorm.reestimate_batch_stats``: recompute a soup's BatchNorm running
  statistics on (degraded) data -- the usual fix when averaged or borrowed
  statistics do not match the averaged weights.
* Output space (``ensemble``): the experts' plurality vote, with the paper's
  text (summed softmax among tied classes) or its code (summed logits over all
  classes) breaking ties.
"""

from fdjax.fusion.batchnorm import reestimate_batch_stats
from fdjax.fusion.ensemble import ensemble_predict
from fdjax.fusion.soup import greedy_soup, uniform_soup, weighted_soup

__all__ = ["ensemble_predict", "greedy_soup", "reestimate_batch_stats", "uniform_soup",
           "weighted_soup"]
