"""Population training (EA-Adam, Sun et al., TIP 2024): P models with different
preferences between objectives, trained by one vmapped step with normalised
per-objective gradients and evolved by SBX, Gaussian mutation and MOEA/D replacement.

    preferences.py  preference vectors, neighbourhoods, crossover partners
    gradients.py    per-tensor normalised gradient combination; the population grad_fn
    operators.py    simulated binary crossover, Gaussian mutation
    moead.py        normalised Tchebycheff, ideal/nadir points, MOEA/D replacement
    evolution.py    the evolutionary epoch as a pure function of a key
    state.py        PopulationState (a TrainState carrying the evolution), sharding
    pareto.py       non-dominated set, hypervolume, the Pareto report
    pareto_plot.py  the front as a PNG, merged models marked
    objectives.py   classification objectives: clean + one per degradation (batch shares)
    fitness.py      per-objective validation metric of every member (fixed keys)
    hook.py         the evolutionary epoch as fit's epoch hook, Pareto record per epoch
    model.py        StackedModel: P members as one module-like object (templates, predict)
    fusion_net.py   the fusion network: per-image mixing of the members, baking

The stages and rows live in ``fdjax.methods.ea_adam`` (methods ``ea_adam`` and
``ea_adam_fusion``); the config in ``config.ea_adam`` and ``config.ea_adam_fusion``.
"""
