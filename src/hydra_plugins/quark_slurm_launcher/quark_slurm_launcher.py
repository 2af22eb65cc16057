"""Quark's SLURM launcher as Hydra sees it (conf/hydra/launcher/slurm.yaml).

Hydra instantiates a launcher only from a class defined in the `hydra_plugins` namespace
package, and imports every module here at startup: this one stays a name, the work is in
quark.slurm.launcher (which imports submitit only when jobs are submitted or run).
"""

from quark.slurm.launcher import SlurmLauncher


class QuarkSlurmLauncher(SlurmLauncher):
    """Hydra's submitit SLURM launcher with Quark's checks and bookkeeping; see quark.slurm.launcher."""
