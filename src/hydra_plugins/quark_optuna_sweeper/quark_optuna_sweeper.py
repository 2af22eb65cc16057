"""Quark's Optuna sweeper as Hydra sees it (conf/hydra/sweeper/quark_optuna.yaml).

Hydra instantiates a sweeper only from a class defined in the `hydra_plugins` namespace
package, and imports every module here at startup: this one stays a name, the work is in
quark.hpo.sweeper (which imports Optuna only when a sweep starts).
"""

from quark.hpo.sweeper import OptunaStudySweeper


class QuarkOptunaSweeper(OptunaStudySweeper):
    """An Optuna study as a Hydra multirun; see quark.hpo.sweeper."""
