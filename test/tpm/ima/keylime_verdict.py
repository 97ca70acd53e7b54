"""Test helper: Keylime's own verdict for an IMA log against a runtime policy.

Usage: keylime_verdict.py POLICY.json LOG.ascii
Prints {"ok": bool, "events": [event ids]} on stdout. Runs Keylime's verifier code path
(keylime.ima.ima.process_measurement_list) without a quote (pcrval None), as Keylime's own unit tests do.
"""
import json
import sys

from keylime.common.algorithms import Hash
from keylime.ima import ima

policy = json.load(open(sys.argv[1], encoding="utf-8"))
lines = open(sys.argv[2], encoding="utf-8").read().split("\n")
_, failure = ima.process_measurement_list(None, lines, policy, pcrval=None, hash_alg=Hash.SHA1)
events = [e.event_id for e in failure.events] if failure else []
print(json.dumps({"ok": not failure, "events": events}))
