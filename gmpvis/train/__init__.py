"""Training: the loop (DDP, AMP, compile, clipping), checkpoints and resume, optimiser and
schedule, the resumable sampler, process groups and logging.

``build_trainer(cfg, init_distributed(...)).train()`` is what ``train.py`` runs.
"""

from gmpvis.train.distributed import DistInfo, cleanup, init_distributed
from gmpvis.train.run import build_trainer, prepare_data
from gmpvis.train.trainer import Trainer, default_num_threads

__all__ = [
    "DistInfo",
    "Trainer",
    "build_trainer",
    "cleanup",
    "default_num_threads",
    "init_distributed",
    "prepare_data",
]
