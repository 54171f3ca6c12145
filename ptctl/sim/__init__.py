"""Trace-driven simulation of the scheduling policies (ptctl.sim.engine), trace readers
(ptctl.sim.traces) and the prompt-tuning trace generator (ptctl.sim.gen)."""
