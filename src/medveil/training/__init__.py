"""Training and evaluating classifiers on plaintext and obfuscated images.

- :mod:`~medveil.training.models`: ResNet50, MobileNetV2, InceptionV3 (timm) and a small CNN,
  one input channel, from scratch or from local weights;
- :mod:`~medveil.training.data`: the prepared data the trainer reads, made from
  :mod:`~medveil.training.sources` (stores, image folders and arrays as one data source),
  :mod:`~medveil.training.splits` (seeded stratified splits) and
  :mod:`~medveil.training.inputs` (standardisation, resizing to the model's input, augmentation);
- :mod:`~medveil.training.train`: the seeded, checkpointed, resumable training loop, with its
  settings (:mod:`~medveil.training.config`), optimiser and schedule
  (:mod:`~medveil.training.optim`), epochs, selection and early stopping
  (:mod:`~medveil.training.epochs`), repeatable randomness (:mod:`~medveil.training.determinism`)
  and run folder (:mod:`~medveil.training.checkpoints`);
- :mod:`~medveil.training.distributed`: that loop on several processes or GPUs (torchrun, DDP);
- :mod:`~medveil.training.evaluate`: test metrics (:mod:`~medveil.training.scoring`) of a run read
  back (:mod:`~medveil.training.runs`), and the key-checked prediction path;
- :mod:`~medveil.training.sweep`: accuracy against the rank k.
"""

from medveil.training.data import DataSource, open_data
from medveil.training.evaluate import EvalResult, Predictions, evaluate, load_run, predict
from medveil.training.models import MODELS, ModelSpec, create_model
from medveil.training.sweep import SweepResult, sweep_rank
from medveil.training.train import ProgressEvent, TrainConfig, TrainResult, train

__all__ = [
    "MODELS",
    "DataSource",
    "EvalResult",
    "ModelSpec",
    "Predictions",
    "ProgressEvent",
    "SweepResult",
    "TrainConfig",
    "TrainResult",
    "create_model",
    "evaluate",
    "load_run",
    "open_data",
    "predict",
    "sweep_rank",
    "train",
]
