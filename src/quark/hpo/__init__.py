"""Hyperparameter optimisation with Optuna, as a Hydra sweeper: `python launch.py -m
hparams_search=pretrain_optuna`.

search_space  the YAML search space (`hydra.sweeper.params`) as Optuna distributions
settings      the sweeper's settings, checked, and where the study is stored
study         opening, resuming and warm-starting the study; a job's outcome as a trial state
similar_studies  the earlier studies of similar runs (warm_start.source: auto), and why
narrowing     earlier values fitted to this space; the space narrowed to the best of them
auto_warm_start  warm_start.source: auto: enqueue, narrow, record (warm_start.json)
sweeper       the Sweeper: asks trials, launches them as Quark jobs, tells the study
pruning       the Lightning callback that reports val/loss to the trial and prunes (training only)
report        best trial, parameter importances, optimisation-history plot

Only `pruning` imports Lightning; the rest stays light (Hydra imports the sweeper at startup).
"""
