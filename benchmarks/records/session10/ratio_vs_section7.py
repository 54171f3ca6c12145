"""The rebuilt bank's held-out runs (session 10) against section 7's random runs, per seed.

    python ratio_vs_section7.py a.jsonl b.jsonl random_check.jsonl

Section 7's random records were lost with session 9's machine; its table gives their steps.
Every random run re-made in session 10 (in the records given) must match it, or this fails.
Prints the pooled medians and the ratio as `ptctl sim gen --convergence` reads it.
"""
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bank_convergence import censored_value, sim_convergence  # noqa: E402

# RESULTS.md, Prompt Bank section 7, random init, seeds 0-2 (None = censored at 600 steps).
RANDOM_S7 = {
    "bbc-business-vs-politics": [10, 20, 10], "bbc-entertainment-vs-tech": [20, 10, 20],
    "bbc-tech-vs-sport": [10, 10, 10], "tweets-angry-vs-calm": [300, None, 390],
    "tweets-great-vs-awful": [270, None, 300], "tweets-neg-vs-neutral": [None, None, None]}


def censored(steps):
    """Section 7's table value as censored_value counts a record (cap 600, eval every 10)."""
    return 610 if steps is None else steps


bank = {}
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)
        if r["init"] == "bank":
            bank.setdefault(r["task"], {})[r["seed"]] = censored_value(r)
        elif r["init"] == "random":
            assert r["steps_to_target"] == RANDOM_S7[r["task"]][r["seed"]], r
b = [bank[t][s] for t in RANDOM_S7 for s in range(3)]
r = [censored(x) for t in RANDOM_S7 for x in RANDOM_S7[t]]
mb, mr = statistics.median(b), statistics.median(r)
per = {t: statistics.median(bank[t].values()) / statistics.median(map(censored, RANDOM_S7[t]))
       for t in RANDOM_S7}
print(json.dumps({"paired_runs": len(b), "bank_median": mb, "random_median": mr,
                  "per_task": per}))
print(json.dumps(sim_convergence({"bank_random_ratio": mb / mr,
                                  "bank_random_ratio_per_task": per})))
