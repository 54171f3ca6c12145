"""Bank (session 10 records) vs random (section 7's runs, per seed; 10 of them re-run here and identical)."""
import json, math, statistics, sys
RANDOM_S7 = {  # RESULTS.md Prompt Bank section 7, random, seeds 0-2 (None = censored at 600)
    "bbc-business-vs-politics": [10, 20, 10], "bbc-entertainment-vs-tech": [20, 10, 20],
    "bbc-tech-vs-sport": [10, 10, 10], "tweets-angry-vs-calm": [300, None, 390],
    "tweets-great-vs-awful": [270, None, 300], "tweets-neg-vs-neutral": [None, None, None]}
val = lambda s: 610 if s is None else s
bank = {}
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)
        if r["init"] == "bank":
            bank.setdefault(r["task"], {})[r["seed"]] = r["steps_to_target"]
        elif r["init"] == "random":   # the re-runs must match section 7
            assert r["steps_to_target"] == RANDOM_S7[r["task"]][r["seed"]], r
b = [val(bank[t][s]) for t in RANDOM_S7 for s in range(3)]
r = [val(x) for t in RANDOM_S7 for x in RANDOM_S7[t]]
mb, mr = statistics.median(b), statistics.median(r)
per = {t: statistics.median(val(bank[t][s]) for s in range(3)) / statistics.median(map(val, RANDOM_S7[t])) for t in RANDOM_S7}
logs = [math.log(v) for v in per.values() if v]
print(json.dumps({"paired_runs": len(b), "bank_median": mb, "random_median": mr, "per_task": per}))
print(json.dumps({"bank_over_random_median": round(mb / mr, 4), "bank_over_random_sigma": round(statistics.stdev(logs), 4)}))
