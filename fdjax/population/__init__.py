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
"""
