"""Running Quark on SLURM through Hydra's submitit launcher (`hydra/launcher=slurm`).

    launcher.py    the launcher: checks the request against the partition before submitting,
                   runs every rank of a job in its job directory, reports each job's outcome
    request.py     what a job asks SLURM for, checked against the trainer and the partition (sinfo)
                   before anything is submitted
    requeue.py     preemption and time limits: checkpoint at a step boundary, requeue, resume

See docs/slurm.md.
"""
