"""SLO-aware planning: throughput model, convergence estimate, GPU need, and the policies that
both `ptctl sim` and `ptctl rebalance` call (see ptctl.planner.policies for the API and
ptctl.planner.views for the job views they see)."""
