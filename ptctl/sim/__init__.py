"""Trace-driven simulation of the scheduling policies (ptctl.sim.engine, with ElasticFlow's replay
in ptctl.sim.elasticflow_replay and its inputs and results in ptctl.sim.results), trace readers
(ptctl.sim.traces), the prompt-tuning trace generator (ptctl.sim.gen) and what `ptctl sim` runs
(ptctl.sim.runner)."""
