"""Re-measure a bank's feature choice with the search queries now run, as `ptctl bank build`
does after adding entries (`ingest.select_features`), without adding any.

    python benchmarks/bank_reselect_features.py BANK_DIR [MODEL]      # MODEL: smollm2-135m by default
"""
import json
import sys

from ptctl.bank import ingest
from ptctl.bank.store import Bank
from ptctl.tuning.models import load_base_model

bank = Bank.for_model(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "smollm2-135m")
model, tokenizer = load_base_model(bank.snapshot(features=False).manifest["model"]["ref"])
print(json.dumps(ingest.select_features(bank, model, tokenizer), indent=1))
print(bank.snapshot(features=False).clusters)
