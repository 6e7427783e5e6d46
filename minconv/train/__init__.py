"""Training as in the paper: SGD with momentum, filter renormalisation, learning-rate
annealing, evaluation with top-1/top-5 error, atomic checkpoints and resumable runs."""
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .metrics import evaluate, predict_proba, topk_correct
from .optim import SGD, renormalize_filters
from .schedule import Constant, Cosine, Plateau, Step, make_schedule, schedule_from_state
from .trainer import Trainer, TrainingDiverged, plot_curves, write_logs

__all__ = ["Checkpoint", "Constant", "Cosine", "Plateau", "SGD", "Step", "Trainer",
           "TrainingDiverged", "evaluate", "load_checkpoint", "make_schedule", "plot_curves",
           "predict_proba", "renormalize_filters", "save_checkpoint", "schedule_from_state",
           "topk_correct", "write_logs"]
