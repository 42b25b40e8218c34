# Tries to read the file named by argv[1]; prints what it got, exits 0 either way.
import sys

try:
    with open(sys.argv[1]) as f:
        print("read:" + f.read())
except OSError as exc:
    print(f"denied: {type(exc).__name__}")
