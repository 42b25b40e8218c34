# Reads a JSON object from stdin, answers with n + 1 and its own arguments.
import json
import sys

data = json.load(sys.stdin)
print(json.dumps({"n": data["n"] + 1, "argv": sys.argv[1:]}))
