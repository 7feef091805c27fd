"""Running one plan: the method's own work, timed, then its result built in one place.

A method computes its attributions (``MethodOutput``); what every method shares (the
target's endpoints on the runtime the plan declares, its time, the convergence verdict)
is added here, so no method repeats it.
"""

from __future__ import annotations

import time

from .options import Plan
from .problem import Problem
from .result import Attribution, attribution


def run_plan(plan: Plan, problem: Problem) -> Attribution:
    began = time.perf_counter()
    out = plan.run(problem)
    endpoints = problem.endpoints(plan.endpoints)  # cached per problem: usually computed by the method
    return attribution(out, endpoints, time.perf_counter() - began)
