"""Learning-rate schedules.

A schedule gives the rate at each point of training, ``lr(position)``, where
``position = epoch + batch / batches_per_epoch`` counts epochs from 0, and
hears the validation error once per epoch through ``end_epoch``. All of them
can start with a linear warm-up over ``warmup`` epochs:

    lr(t) = rate(t) * (0.1 + 0.9 * t / warmup)      for t < warmup

- :class:`Constant`  rate = base
- :class:`Plateau`   the paper's annealing: rate / 10 once the validation error has not
                     improved for ``patience`` epochs
- :class:`Step`      rate = base * gamma^(number of milestones <= epoch)
- :class:`Cosine`    rate = min + (base - min) * (1 + cos(pi * s)) / 2, s from 0 to 1
                     between the end of the warm-up and ``epochs``
"""
import math


class Schedule:
    kind = "constant"

    def __init__(self, base_lr, warmup=0.0):
        self.base_lr, self.warmup = float(base_lr), float(warmup)

    def _rate(self, position):
        return self.base_lr

    def lr(self, position):
        rate = self._rate(position)
        if position < self.warmup:
            rate *= 0.1 + 0.9 * position / self.warmup
        return rate

    def end_epoch(self, epoch, val_error):
        """Hear the validation error of ``epoch``; True when the rate was lowered."""
        return False

    def state_dict(self):
        """JSON-able: the kind, its arguments and its running state."""
        return {"kind": self.kind, **{k: v for k, v in vars(self).items()}}

    def load_state_dict(self, state):
        if state.get("kind") != self.kind:
            raise ValueError(f"schedule state is for {state.get('kind')!r}, not {self.kind!r}")
        for key, value in state.items():
            if key != "kind":
                setattr(self, key, list(value) if isinstance(value, list) else value)


class Constant(Schedule):
    kind = "constant"


class Plateau(Schedule):
    """Divide the rate by 1/``factor`` when the validation error has not improved (by more
    than ``threshold``) for ``patience`` epochs in a row; the count then starts again."""
    kind = "plateau"

    def __init__(self, base_lr, patience=3, factor=0.1, threshold=0.0, min_lr=0.0, warmup=0.0):
        super().__init__(base_lr, warmup)
        if patience < 1:
            raise ValueError(f"Plateau: patience must be >= 1, got {patience}")
        self.patience, self.factor = int(patience), float(factor)
        self.threshold, self.min_lr = float(threshold), float(min_lr)
        self.current, self.best, self.bad_epochs = float(base_lr), None, 0

    def _rate(self, position):
        return self.current

    def end_epoch(self, epoch, val_error):
        if val_error is None or not math.isfinite(val_error):
            return False
        if self.best is None or val_error < self.best - self.threshold:
            self.best, self.bad_epochs = float(val_error), 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return False
        self.bad_epochs = 0
        lowered = max(self.current * self.factor, self.min_lr)
        changed = lowered < self.current
        self.current = lowered
        return changed


class Step(Schedule):
    """rate = base * gamma^(number of milestones <= epoch): e.g. milestones (10, 20)."""
    kind = "step"

    def __init__(self, base_lr, milestones=(), gamma=0.1, warmup=0.0):
        super().__init__(base_lr, warmup)
        self.milestones, self.gamma = sorted(int(m) for m in milestones), float(gamma)

    def _rate(self, position):
        passed = sum(1 for m in self.milestones if m <= math.floor(position + 1e-9))
        return self.base_lr * self.gamma ** passed


class Cosine(Schedule):
    """Half a cosine from ``base_lr`` after the warm-up down to ``min_lr`` at ``epochs``."""
    kind = "cosine"

    def __init__(self, base_lr, epochs, min_lr=0.0, warmup=0.0):
        super().__init__(base_lr, warmup)
        if epochs <= warmup:
            raise ValueError(f"Cosine: epochs ({epochs}) must exceed the warm-up ({warmup})")
        self.epochs, self.min_lr = float(epochs), float(min_lr)

    def _rate(self, position):
        s = min(max((position - self.warmup) / (self.epochs - self.warmup), 0.0), 1.0)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * s))


SCHEDULES = {"constant": Constant, "plateau": Plateau, "step": Step, "cosine": Cosine}


def make_schedule(kind, base_lr, epochs=None, warmup=0.0, patience=3, milestones=(),
                  gamma=0.1, min_lr=0.0):
    """A schedule by name: 'constant', 'plateau', 'step' or 'cosine'."""
    if kind == "constant":
        return Constant(base_lr, warmup=warmup)
    if kind == "plateau":
        return Plateau(base_lr, patience=patience, factor=gamma, min_lr=min_lr, warmup=warmup)
    if kind == "step":
        return Step(base_lr, milestones=milestones, gamma=gamma, warmup=warmup)
    if kind == "cosine":
        if epochs is None:
            raise ValueError("the cosine schedule needs the number of epochs")
        # a short run (a test, a smoke run) keeps half its epochs for the decay
        return Cosine(base_lr, epochs, min_lr=min_lr, warmup=min(warmup, epochs / 2))
    raise ValueError(f"unknown schedule {kind!r}; choose from {', '.join(SCHEDULES)}")


def schedule_from_state(state):
    """Rebuild a schedule saved by ``state_dict``."""
    kind = state.get("kind")
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule kind {kind!r} in saved state")
    cls = SCHEDULES[kind]
    schedule = cls.__new__(cls)
    schedule.load_state_dict(state)
    return schedule
