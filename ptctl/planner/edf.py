"""`edf`: earliest deadline first at each job's maximum, re-decided every round."""

from __future__ import annotations

from ptctl.planner.interface import Policy, _decision, _largest_fitting


class EdfPolicy(Policy):
    """Earliest deadline first, each job at its maximum or what is left; re-decided every round
    (a later job can be paused), as ElasticFlow's `edf` baseline."""

    name = "edf"

    def decide(self, now_s, gpu_budget, jobs, cluster):
        free = gpu_budget
        out = {}
        for job in sorted(jobs, key=lambda j: (j.deadline_s, j.arrival_s, j.job_id)):
            g = _largest_fitting(job, free, job.max_gpus)
            free -= g
            finish = now_s + job.remaining_iterations / job.rate(g) if g else None
            out[job.job_id] = _decision(job, g, "deadline order" if g else "no GPUs left", finish)
        return [out[j.job_id] for j in jobs]
