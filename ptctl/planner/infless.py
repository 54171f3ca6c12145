"""`infless`: a fixed size chosen at arrival, never resized."""

from __future__ import annotations

from ptctl.planner.gpu_need import gpu_need
from ptctl.planner.interface import Policy, _decision


class InflessPolicy(Policy):
    """A fixed size chosen at arrival: the smallest allowed count whose profiled duration fits the
    deadline (the most resource-efficient one), or the fastest when none fits. Never resized;
    queued jobs start in arrival order when their size fits (no blocking)."""

    name = "infless"

    def decide(self, now_s, gpu_budget, jobs, cluster):
        free = gpu_budget - sum(j.gpus for j in jobs)
        out = {}
        for job in sorted(jobs, key=lambda j: (j.arrival_s, j.job_id)):
            if job.state == "running":
                out[job.job_id] = _decision(job, job.gpus, "fixed size")
                continue
            size = job.memory.get("infless_gpus")
            update = None
            if size is None:
                size = gpu_need(job.remaining_iterations, now_s, job.deadline_s, job.rate,
                                job.allowed_gpus, 0, cluster)
                if size is None:
                    size = max(job.allowed_gpus, key=job.rate)
                update = {"infless_gpus": int(size)}
            if size <= free:
                free -= size
                finish = now_s + cluster.transition_s(0, size) + job.remaining_iterations / job.rate(size)
                out[job.job_id] = _decision(job, size, "fixed size fits", finish,
                                            memory_update=update)
            else:
                out[job.job_id] = _decision(job, 0, "waiting for its fixed size",
                                            memory_update=update)
        return [out[j.job_id] for j in jobs]
