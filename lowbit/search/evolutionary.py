"""``evolutionary``: multi-objective search with Optuna's NSGA-II for spaces too large to enumerate.

Two objectives: maximise accuracy, minimise the objective metric. Budgets become NSGA-II
constraints (cost - budget <= 0 is feasible). Each trial picks one choice label per free layer
(``suggest_categorical``). Trials are asked in batches of ``workers`` and evaluated together (in
the evaluator's process pool when it has one), then told.

Resuming: with ``storage`` (e.g. ``"sqlite:///runs/search/study.db"``) the study is loaded when it
exists (``load_if_exists``). ``n_trials`` is the number of complete trials the study should hold in
total: a resumed search runs only the ones still missing (none when there are enough). A trial left
``RUNNING`` by a search that was killed is marked ``FAIL`` on resume (and does not count); a search
interrupted in this process (Ctrl-C, an error) marks its unfinished trials ``FAIL`` before it
stops. A study is meant to be driven by one search process at a time. The result covers every
complete trial in the study, old ones included (their accuracy and loss are stored as trial
attributes, so they are not evaluated again). A stored study made for another space (layers or choices) is
refused. Optuna is an optional dependency (``pip install optuna``).
"""
from __future__ import annotations

import json
from pathlib import Path

from .problem import Problem
from .result import Result
from .strategies import register_strategy


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ValueError("strategy evolutionary needs Optuna; allowed: install it with `pip install optuna`") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _signature(problem: Problem) -> str:
    return json.dumps({"layers": list(problem.space.free), "choices": list(problem.space.labels),
                       "objective": problem.objective})


def _study(optuna, storage, study_name, sampler):
    """Create or load the study; a sqlite file's folder is created; storage errors become ValueError."""
    if storage and storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.create_study(directions=["maximize", "minimize"], storage=storage, study_name=study_name,
                                   sampler=sampler, load_if_exists=True)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy / optuna errors: one clear line
        if isinstance(exc, (ImportError, KeyboardInterrupt)):
            raise
        raise ValueError(f"storage {storage!r} cannot be opened ({' '.join(str(exc).split())[:160]}); allowed: "
                         f"an Optuna storage URL such as sqlite:///runs/search/study.db") from None


def _constraints(trial):
    return trial.user_attrs.get("constraints", [0.0])


def _fail_interrupted(optuna, study) -> int:
    """Mark the trials a killed search left ``RUNNING`` as ``FAIL``; return how many."""
    stale = [t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for number in stale:
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    return len(stale)


def _run_batch(optuna, study, problem: Problem, native: bool, n: int) -> int:
    """Ask ``n`` trials, evaluate them together, tell them; on any exception (Ctrl-C included) the
    trials not yet told are told ``FAIL`` before it propagates. Returns ``n``."""
    space, labels = problem.space, list(problem.space.labels)
    trials = [study.ask() for _ in range(n)]
    told = set()
    try:
        idxs = [tuple(labels.index(t.suggest_categorical(name, labels)) for name in space.free) for t in trials]
        for t, row in zip(trials, problem.evaluate(idxs, strategy="evolutionary")):
            t.set_user_attr("loss", row["loss"])
            t.set_user_attr("acc", row["acc"])
            slack = {m: row[m] - b for m, b in problem.budgets.items()}   # <= 0: within budget
            if native:
                for m, v in slack.items():
                    t.set_constraint(m, v)
            elif slack:
                t.set_user_attr("constraints", list(slack.values()))
            study.tell(t, [row["acc"], row[problem.objective]])
            told.add(t.number)
    except BaseException:
        for t in trials:
            if t.number not in told:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
        raise
    return n


@register_strategy("evolutionary")
def evolutionary(problem: Problem, n_trials: int = 40, storage: str | None = None,
                 study_name: str = "lowbit-search", population_size: int | None = None) -> Result:
    """NSGA-II over the space; see the module docstring. ``population_size`` defaults to
    min(50, max(4, n_trials // 4))."""
    optuna = _optuna()
    if not isinstance(n_trials, int) or n_trials < 0:
        raise ValueError(f"n_trials={n_trials!r} is not allowed; allowed: an integer >= 0")
    pop = population_size or min(50, max(4, n_trials // 4))
    native = hasattr(optuna.trial.Trial, "set_constraint")   # Optuna >= 5: constraints live on the trial
    sampler = optuna.samplers.NSGAIISampler(
        population_size=pop, seed=problem.seed,
        **({"constraints_func": _constraints} if problem.budgets and not native else {}))
    study = _study(optuna, storage, study_name, sampler)
    sig = _signature(problem)
    stored = study.user_attrs.get("lowbit_space")
    if stored is None:
        study.set_user_attr("lowbit_space", sig)
    elif stored != sig:
        raise ValueError(f"study {study_name!r} in {storage} was made for another search space ({stored}); "
                         f"allowed: the same model, formats and objective, or a new --study-name")
    space, labels = problem.space, list(problem.space.labels)
    stale = _fail_interrupted(optuna, study)
    states = optuna.trial.TrialState
    before = sum(t.state == states.COMPLETE for t in study.trials)
    todo = max(0, n_trials - before)
    done = 0
    while done < todo:
        done += _run_batch(optuna, study, problem, native, min(max(1, problem.evaluator.workers), todo - done))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ValueError("the study has no complete trials; allowed: n_trials >= 1")
    idxs = [tuple(labels.index(t.params[n]) for n in space.free) for t in complete]
    for idx, t in zip(idxs, complete):   # stored trials count as evaluated: no re-evaluation
        key = space.recipe(idx).hash()
        problem.evaluator.cache.setdefault(key, {"loss": t.user_attrs["loss"], "acc": t.user_attrs["acc"]})
    rows = problem.evaluate(idxs, strategy="evolutionary")
    for row, t in zip(rows, complete):
        row["trial"] = t.number
    note = (f"NSGA-II (population {pop}): {todo} new trials ({before} complete before, {n_trials} asked "
            f"for in total), {len(complete)} complete in study {study_name!r}"
            + (f" ({storage})" if storage else "")
            + (f"; {stale} trial(s) interrupted by an earlier kill marked failed" if stale else ""))
    return problem.finish("evolutionary", rows, notes=[note], extra={"n_trials_total": len(complete)})
