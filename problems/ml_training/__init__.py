"""The ML-training family: make a slow training pipeline fast without changing what it
computes, graded from outside the candidate's process.

Its modules follow the order of a grading:

- ``declarations/``: one :class:`spec.TaskSpec` per problem (the flagship ``complex``,
  ``numpy``, ``pytorch``);
- ``task``: the :class:`problem.Problem` contract over a spec; ``prompt``: what the
  agent is told;
- ``probes``, ``fresh_inputs``, ``oracle``: what the runner watches, the data each
  execution gets, the original's answers on it;
- ``calibration`` (what a target means, pure) and ``ladder`` (how the baseline and
  the tiers are measured);
- ``grading`` (the pipeline: static gate, figures, session, verdict), ``session``,
  ``evidence`` and ``verdict`` (one pure function);
- the checks: ``static_checks``, ``runtime_checks``, ``model_checks``,
  ``training_checks``, over ``execution_report`` (the trust boundary);
- ``timing/``: the executor, side by side, the cache, and the runner's two programs;
- ``reference/``: the tiers.

Nothing outside ``problems/`` imports it except through ``problems.registry``.
"""
