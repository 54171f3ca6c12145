"""`fifo`: arrival order at each job's maximum, strict queue (no resizing)."""

from __future__ import annotations

from ptctl.planner.interface import Policy, _decision, _largest_fitting


class FifoPolicy(Policy):
    """Arrival order, each job at its maximum; strict queue (head-of-line blocking), no resizing."""

    name = "fifo"

    def decide(self, now_s, gpu_budget, jobs, cluster):
        free = gpu_budget - sum(j.gpus for j in jobs)
        blocked = False
        out = {}
        for job in sorted(jobs, key=lambda j: (j.arrival_s, j.job_id)):
            if job.state == "running":
                out[job.job_id] = _decision(job, job.gpus, "running")
                continue
            want = _largest_fitting(job, job.max_gpus)
            if not blocked and want <= free:
                free -= want
                out[job.job_id] = _decision(job, want, "head of queue",
                                            now_s + job.remaining_iterations / job.rate(want))
            else:
                blocked = True
                out[job.job_id] = _decision(job, 0, "waiting in arrival order")
        return [out[j.job_id] for j in jobs]
